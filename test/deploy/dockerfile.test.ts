import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { normalizeConfig, parseConfigText, parseListenAddress } from '../../src/config/config.js';
import { repoRoot } from './kustomize.js';

const root = repoRoot(fileURLToPath(new URL('.', import.meta.url)));

/** One Dockerfile instruction: keyword, its flags (`--from=build`), and the rest of the line. */
interface Instruction {
  keyword: string;
  flags: string[];
  args: string;
  line: number;
}

/**
 * Splits a Dockerfile into instructions the way the builder does: `#` comment lines dropped (also inside
 * continuations), `\` joins lines, the keyword is case-insensitive, leading `--flags` are separated.
 */
function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let pending = '';
  let start = 0;
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (/^\s*#/.test(line)) return;
    if (pending === '' && line.trim() === '') return;
    if (pending === '') start = i + 1;
    if (/\\\s*$/.test(line)) {
      pending += line.replace(/\\\s*$/, ' ');
      return;
    }
    pending += line;
    const m = /^\s*(\S+)\s*(.*)$/.exec(pending) as RegExpExecArray;
    pending = '';
    let args = (m[2] ?? '').trim();
    const flags: string[] = [];
    for (let f = /^(--\S+)\s+/.exec(args); f; f = /^(--\S+)\s+/.exec(args)) {
      flags.push(f[1] as string);
      args = args.slice(f[0].length);
    }
    out.push({ keyword: (m[1] as string).toUpperCase(), flags, args, line: start });
  });
  return out;
}

/** A JSON-array (exec form) argument, or null for shell form. */
function execForm(args: string): string[] | null {
  if (!args.startsWith('[')) return null;
  try {
    const v = JSON.parse(args) as unknown;
    return Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : null;
  } catch {
    return null;
  }
}

/** `.dockerignore` patterns as a matcher (enough for plain paths, directory names and `*` globs). */
function dockerignore(text: string): (path: string) => boolean {
  const patterns = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map(
      (p) =>
        new RegExp(
          `^${p
            .replace(/^\//, '')
            .replace(/[.+^${}()|[\]\\]/g, '\\$&')
            .replace(/\*/g, '[^/]*')}(/.*)?$`,
        ),
    );
  return (path) => patterns.some((re) => re.test(path));
}

const text = readFileSync(join(root, 'Dockerfile'), 'utf8');
const instructions = parseDockerfile(text);
const stages: Instruction[][] = [];
const globalArgs = new Map<string, string>();
for (const ins of instructions) {
  if (ins.keyword === 'FROM') stages.push([ins]);
  else if (stages.length > 0) stages[stages.length - 1]?.push(ins);
  else if (ins.keyword === 'ARG') {
    const [name, value] = ins.args.split('=');
    if (name && value !== undefined) globalArgs.set(name, value);
  }
}
const finalStage = stages[stages.length - 1] ?? [];
const last = (keyword: string): Instruction | undefined => [...finalStage].reverse().find((i) => i.keyword === keyword);
/** A FROM image with `${ARG}` expanded from the global ARG defaults. */
const image = (from: Instruction): string => (from.args.split(/\s+/)[0] ?? '').replace(/\$\{?(\w+)\}?/g, (_, n: string) => globalArgs.get(n) ?? '');

t.test('the parser sees flags, continuations and exec form', async (t) => {
  const parsed = parseDockerfile('FROM a AS b\n# c\nRUN x \\\n  # inner comment\n  && y\ncopy --from=b /s /d\nCMD ["node", "x"]\n');
  t.same(
    parsed.map((i) => i.keyword),
    ['FROM', 'RUN', 'COPY', 'CMD'],
  );
  t.equal(parsed[1]?.args.replace(/\s+/g, ' '), 'x && y', 'continuation joined, inner comment dropped');
  t.same(parsed[2]?.flags, ['--from=b']);
  t.same(execForm(parsed[3]?.args ?? ''), ['node', 'x']);
  t.equal(execForm('node x'), null);
});

t.test('multi-stage build: node:<LTS>-bookworm-slim to build, Debian slim with the node binary to run', async (t) => {
  t.ok(stages.length >= 3, 'build, production dependencies and runtime stages');
  const stageNamed = (name: string) => stages.find((s) => new RegExp(`\\bAS\\s+${name}$`, 'i').test((s[0] as Instruction).args));
  for (const stage of stages.slice(0, -1)) {
    const ref = image(stage[0] as Instruction);
    const m = /^node:(\d+)-bookworm-slim$/.exec(ref);
    t.ok(m, `line ${(stage[0] as Instruction).line}: ${ref} is an official node:<major>-bookworm-slim image`);
    // Node's LTS lines are the even majors; 20 is past its end of life, so 22 or newer.
    t.ok(m && Number(m[1]) >= 22 && Number(m[1]) % 2 === 0, `${ref}: a supported LTS major`);
  }
  t.equal(image(finalStage[0] as Instruction), 'debian:bookworm-slim', 'the runtime is Debian slim (same glibc as the build)');

  const build = stages[0] ?? [];
  t.ok(
    build.some((i) => i.keyword === 'RUN' && /\bnpm ci\b/.test(i.args) && !/--omit=dev/.test(i.args)),
    'build stage installs dev dependencies',
  );
  t.ok(
    build.some((i) => i.keyword === 'RUN' && /\btsc\b|npm run build/.test(i.args)),
    'build stage compiles',
  );
  const deps = stageNamed('deps');
  t.ok(
    deps?.some((i) => i.keyword === 'RUN' && /\bnpm ci\b.*--omit=dev/.test(i.args)),
    'a stage installs production dependencies only',
  );
  const copies = finalStage.filter((i) => i.keyword === 'COPY' && i.flags.some((f) => /^--from=/.test(f)));
  t.ok(
    copies.some((i) => i.flags.includes('--from=deps') && /node_modules/.test(i.args)),
    'runtime copies the production node_modules',
  );
  t.ok(
    copies.some((i) => i.flags.includes('--from=build') && /dist\/src/.test(i.args)),
    'runtime copies the compiled code',
  );
  t.ok(
    copies.some((i) => /^\/usr\/local\/bin\/node\s/.test(i.args)),
    'runtime copies the node binary alone',
  );
  t.notOk(
    finalStage.some((i) => i.keyword === 'RUN' && /\b(npm|npx|corepack|yarn|apt-get|gcc|make)\b/.test(i.args)),
    'no npm or build tools run (or land) in the runtime stage',
  );
  t.notOk(
    copies.some((i) => /node_modules\/npm|\/usr\/local\/lib\/node_modules/.test(i.args)),
    'npm itself is not copied',
  );
});

t.test('berth is on PATH', async (t) => {
  t.match(text, /ln -s \/app\/dist\/src\/cli\/main\.js \/usr\/local\/bin\/berth/, '/usr/local/bin/berth runs the CLI');
  t.match(text, /chmod 0?755 \/app\/dist\/src\/cli\/main\.js/, 'executable');
  t.match(readFileSync(join(root, 'src', 'cli', 'main.ts'), 'utf8'), /^#!\/usr\/bin\/env node\n/, 'with a node shebang');
  t.ok(
    finalStage.some((i) => i.keyword === 'COPY' && /\bpackage\.json\b/.test(i.args)),
    'package.json ("type": "module") sits next to dist/',
  );
  // `kubectl exec ... berth gc` names no config: without BERTH_CONFIG the CLI would look for ./data.
  const env = finalStage.find((i) => i.keyword === 'ENV' && /^BERTH_CONFIG[= ]/.test(i.args));
  t.equal(env?.args.split(/[= ]/)[1], execForm(last('CMD')?.args ?? '')?.[3], 'BERTH_CONFIG names the config file the server reads');
});

t.test('the web UI script is built too', async (t) => {
  const build = stages[0] ?? [];
  t.ok(
    build.some((i) => i.keyword === 'RUN' && /tsc -p tsconfig\.browser\.json|npm run build/.test(i.args)),
    'the build stage compiles the browser script (dist/src/http/ui/browser), which the runtime copies with dist/src',
  );
});

t.test("plain syntax Docker 20.10's builder accepts", async (t) => {
  t.notMatch(text, /^#\s*syntax\s*=/m, 'no parser directive pulling a frontend image');
  t.notMatch(text, /<<-?\s*["']?[A-Z]+/m, 'no heredocs');
  for (const ins of instructions) {
    for (const f of ins.flags) {
      const ok = /^--(from|chown|platform|interval|timeout|start-period|retries)=/.test(f);
      t.ok(ok, `line ${ins.line}: ${ins.keyword} ${f} works with the legacy builder (no --link, --mount, --chmod)`);
    }
  }
});

t.test('runtime user, port, volume, health check and command', async (t) => {
  const user = last('USER');
  t.ok(user, 'USER is set');
  t.match(user?.args, /^[1-9]\d*(:\d+)?$/, 'USER is a numeric non-root uid, so runAsNonRoot can check it');
  t.same(last('EXPOSE')?.args.split(/\s+/), ['5000']);
  const volume = last('VOLUME');
  t.same(execForm(volume?.args ?? '') ?? volume?.args.split(/\s+/), ['/var/lib/registry']);

  const health = last('HEALTHCHECK');
  const hc = /^(?:--\S+\s+)*CMD\s+(.*)$/.exec(health ? [...health.flags, health.args].join(' ') : '');
  const hcCmd = execForm(hc?.[1] ?? '');
  t.ok(hcCmd, 'HEALTHCHECK CMD in exec form');
  t.equal(hcCmd?.[0], 'node', 'the health check runs node (the image has no curl)');
  t.match(hcCmd?.join(' '), /\/healthz/);
  t.notMatch(instructions.map((i) => i.args).join('\n'), /\b(curl|wget)\b/, 'nothing relies on curl or wget');

  t.notOk(last('ENTRYPOINT'), 'no ENTRYPOINT wrapper: node is PID 1');
  const cmd = execForm(last('CMD')?.args ?? '');
  t.ok(cmd, 'CMD in exec form (no /bin/sh -c between docker stop and node)');
  t.equal(cmd?.[0], 'node');
  t.equal(cmd?.[2], 'serve');
  t.ok(existsSync(join(root, (cmd?.[1] ?? '').replace(/^dist\//, '').replace(/\.js$/, '.ts'))), `${cmd?.[1]} is compiled from a source file`);
  t.ok(cmd?.[3] === '/etc/berth/config.yml' || cmd?.[3] === '/etc/docker/registry/config.yml', 'serves the default config path');
  t.match(text, /ln -s \/etc\/berth\/config\.yml \/etc\/docker\/registry\/config\.yml/, "registry:2's config path leads to the same file");
});

t.test('the default config: filesystem storage on the volume, no auth, :5000', async (t) => {
  const copy = finalStage.find((i) => i.keyword === 'COPY' && /\/etc\/berth\/config\.yml$/.test(i.args));
  t.ok(copy, 'a default /etc/berth/config.yml');
  const src = copy?.args.split(/\s+/)[0] ?? '';
  const warnings: string[] = [];
  const config = normalizeConfig(parseConfigText(readFileSync(join(root, src), 'utf8'), src), warnings);
  t.same(warnings, []);
  t.equal(config.storage.driver, 'filesystem');
  t.equal(config.storage.filesystem.rootDirectory, last('VOLUME')?.args.replace(/[[\]"]/g, ''), 'storage on the VOLUME');
  t.equal(config.auth, undefined, 'no auth');
  t.equal(parseListenAddress(config.http.addr).port, 5000);
  t.match(text, /chown 1000:1000 \/var\/lib\/registry/, 'the volume belongs to the runtime user');
});

t.test('.dockerignore keeps local state out and every COPY source in', async (t) => {
  const ignored = dockerignore(readFileSync(join(root, '.dockerignore'), 'utf8'));
  for (const p of ['node_modules', 'dist', '.git', 'data', '.tap', 'node_modules/x/y.js', 'dist/src/app.js']) t.ok(ignored(p), `${p} ignored`);
  for (const ins of instructions.filter((i) => (i.keyword === 'COPY' || i.keyword === 'ADD') && !i.flags.some((f) => f.startsWith('--from')))) {
    const parts = ins.args.split(/\s+/);
    for (const src of parts.slice(0, -1)) {
      t.ok(existsSync(join(root, src)), `line ${ins.line}: ${src} exists`);
      t.notOk(ignored(src.replace(/\/$/, '')), `line ${ins.line}: ${src} is not excluded by .dockerignore`);
    }
  }
});

t.test('README, package.json and the image agree on the Node version', async (t) => {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { engines?: { node?: string } };
  const min = /^>=(\d+)$/.exec(pkg.engines?.node ?? '')?.[1];
  t.ok(min, `engines.node is a minimum major (${pkg.engines?.node})`);
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const said = /Node\.js (\d+) or newer \((\d+) recommended\)/.exec(readme);
  t.ok(said, 'README states the minimum and the recommended major');
  t.equal(said?.[1], min, 'README minimum = engines.node');
  const built = /^node:(\d+)-/.exec(image((stages[0] ?? [])[0] as Instruction))?.[1];
  t.equal(built, said?.[2], 'the image runs the recommended major');
  t.ok(Number(process.versions.node.split('.')[0]) >= Number(min), `this Node (${process.version}) meets engines.node`);
});
