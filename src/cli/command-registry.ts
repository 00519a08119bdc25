/** A `berth` subcommand contributed by a module (gc, du, fsck, user). */
export interface Command {
  /** One line for --help. */
  usage: string;
  run(args: string[]): Promise<number>;
}

/** Commands beyond `serve`, by name; modules imported by `commands.ts` register themselves here. */
export const commands = new Map<string, Command>();
