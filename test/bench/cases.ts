/** A benchmark case another module contributes (S3 driver, pull-through cache): returns named figures. */
export type BenchCase = () => Promise<Record<string, number | string>>;

/** Extra cases `npm run bench` runs after the main comparison table, by name. */
export const extraCases = new Map<string, BenchCase>();
