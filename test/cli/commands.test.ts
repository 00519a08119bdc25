import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { startBerth } from '../helpers/berth.js';
import { BERTH_MAIN, cleanEnv, plainNode, runBerth } from '../helpers/berth-process.js';
import { tempDir } from '../helpers/ports.js';
import { randomLayer, RegistryClient } from '../helpers/registry-client.js';
import { blobFile } from '../gc/tree.js';

/**
 * `berth serve` with `args`, killed if it is still running after 30 s (a config that should have been refused
 * started a server): resolves with the exit code (null when it had to be killed) and what it printed.
 */
async function serveExit(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stderr: string }> {
  const proc = spawn(...plainNode([BERTH_MAIN, 'serve', ...args]), { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stdout.on('data', (c: Buffer) => (stderr += c.toString()));
  proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const guard = setTimeout(() => proc.kill('SIGKILL'), 30_000);
  const [code] = (await once(proc, 'close')) as [number | null];
  clearTimeout(guard);
  return { code, stderr };
}

// Each row: a config file with a mistake that would open access or move data, and the key berth must name.
const MISTAKES: Array<[string, string, RegExp]> = [
  ['auth type misspelt', 'auth:\n  htpaswd:\n    realm: r\n    path: /etc/htpasswd\n', /auth\.htpaswd: unknown key \(did you mean "htpasswd"\?\)/],
  ['storage section misspelt', 'stroage:\n  filesystem:\n    rootdirectory: /srv/registry\n', /stroage: unknown key/],
  ['client CAs misspelt', 'http:\n  tls:\n    certificate: /c.pem\n    key: /k.pem\n    clientca: [/ca.pem]\n', /http\.tls\.clientca: unknown key/],
  ['proxy as a string', 'proxy: https://registry-1.docker.io\n', /proxy: expected a section/],
  ['proxy key misspelt', 'proxy:\n  remoteurl: https://registry-1.docker.io\n  pasword: x\n', /proxy\.pasword: unknown key/],
  ['redis key misspelt', 'redis:\n  addr: 127.0.0.1:6379\n  passwd: x\n', /redis\.passwd: unknown key/],
  ['storage driver berth lacks', 'storage:\n  azure:\n    accountname: a\n', /storage\.azure: not supported/],
  ['silly auth', 'auth:\n  silly:\n    realm: r\n    service: s\n', /auth\.silly: not supported/],
  [
    'duration without a unit',
    'storage:\n  maintenance:\n    uploadpurging:\n      age: 168\n',
    /storage\.maintenance\.uploadpurging\.age: 168 needs a unit, e\.g\. 168h/,
  ],
];

t.test('berth serve refuses a config with a mistake that would open access or move data, naming the key', async (t) => {
  const dir = await tempDir(t, 'berth-cli-mistakes-');
  for (const [what, text, key] of MISTAKES) {
    const file = join(dir, `${what.replace(/\W+/g, '-')}.yml`);
    await writeFile(file, text);
    // Port 0: were the file accepted, the server would start (and be killed by the guard: code null).
    const { code, stderr } = await serveExit([file], { REGISTRY_HTTP_ADDR: '127.0.0.1:0' });
    t.equal(code, 1, `${what}: exit 1`);
    t.match(stderr, key, `${what}: the message names the key`);
    t.notMatch(stderr, /\n\s+at .*:\d+:\d+/, `${what}: no stack trace`);
  }
  const env = await serveExit([], { REGISTRY_AUTH_HTPASWD_PATH: '/etc/htpasswd', REGISTRY_HTTP_ADDR: '127.0.0.1:0' });
  t.equal(env.code, 1, 'a misspelt REGISTRY_* variable too');
  t.match(env.stderr, /auth\.htpaswd: unknown key/);
});

t.test('every command has --help, which prints and does nothing else', async (t) => {
  for (const cmd of ['serve', 'gc', 'du', 'fsck', 'user', 'config']) {
    // An address that could never be listened on: a server that started anyway would stop with an error, not 0.
    const r = await runBerth([cmd, '--help'], { env: { REGISTRY_HTTP_ADDR: 'nowhere' } });
    t.equal(r.code, 0, `${cmd} --help exits 0`);
    t.match(r.stdout, new RegExp(`Usage: berth ${cmd}`), `${cmd} --help prints its usage`);
    t.match(r.stdout, /-c, --config FILE/, `${cmd} names its config with -c/--config`);
    t.equal(r.stderr, '', `${cmd} --help says nothing else`);
  }
  const top = await runBerth(['--help']);
  t.equal(top.code, 0);
  for (const cmd of ['serve', 'gc', 'du', 'fsck', 'user', 'config']) t.match(top.stdout, new RegExp(`\\n  ${cmd} `), `berth --help lists ${cmd}`);
  t.equal((await runBerth([])).code, 2, 'no command is a usage error');
});

t.test('unknown flags and stray arguments exit 2 with a message', async (t) => {
  const rows: Array<[string[], RegExp]> = [
    [['serve', '--port', '5000'], /Unknown option '--port'/],
    [['gc', '--dryrun'], /Unknown option '--dryrun'/],
    [['du', '-x'], /Unknown option '-x'/],
    [['fsck', '--repair=yes'], /--repair/],
    [['gc', '--grace'], /--grace/],
    [['gc', 'a.yml', 'b.yml'], /unexpected argument "b\.yml"/],
    [['gc', 'a.yml', '-c', 'b.yml'], /the config file is given twice/],
    [['config', 'validate'], /unknown subcommand "validate"/],
    [['user', 'add'], /expected add or rm and a user name/],
    [['frobnicate'], /unknown command "frobnicate"/],
  ];
  for (const [args, message] of rows) {
    const r = await runBerth(args);
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, message, `${args.join(' ')}: says what is wrong`);
  }
});

t.test('gc, du and fsck: a storage root that does not exist is an error, an empty one is fine', async (t) => {
  const dir = await tempDir(t, 'berth-cli-root-');
  const missing = join(dir, 'not-there');
  const cfg = join(dir, 'missing.yml');
  await writeFile(cfg, `log:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: ${missing}\n`);
  const empty = join(dir, 'empty');
  await mkdir(empty);
  const emptyCfg = join(dir, 'empty.yml');
  await writeFile(emptyCfg, `log:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: ${empty}\n`);
  for (const cmd of ['gc', 'du', 'fsck']) {
    const r = await runBerth([cmd, cfg]);
    t.equal(r.code, 1, `${cmd} on a missing root: exit 1`);
    t.match(r.stderr, new RegExp(`storage root ${missing} does not exist`), `${cmd} says so`);
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
    const ok = await runBerth([cmd, '-c', emptyCfg]);
    t.equal(ok.code, 0, `${cmd} on an empty root: exit 0 (${ok.stderr})`);
  }
});

t.test('the config file: -c, else the argument, else BERTH_CONFIG, else REGISTRY_CONFIGURATION_PATH', async (t) => {
  const dir = await tempDir(t, 'berth-cli-config-');
  const files: Record<string, string> = {};
  for (const name of ['flag', 'arg', 'berth', 'registry']) {
    files[name] = join(dir, `${name}.yml`);
    await writeFile(files[name] as string, `http:\n  addr: 127.0.0.1:${name.length}\n`);
  }
  const addr = async (args: string[], env: Record<string, string> = {}) => {
    const r = await runBerth(['config', 'check', ...args], { env });
    t.equal(r.code, 0, r.stderr);
    return /addr: (\S+)/.exec(r.stdout)?.[1];
  };
  const both = { BERTH_CONFIG: files.berth as string, REGISTRY_CONFIGURATION_PATH: files.registry as string };
  t.equal(await addr(['-c', files.flag as string], both), '127.0.0.1:4', '-c wins');
  t.equal(await addr(['--config', files.flag as string], both), '127.0.0.1:4', '--config wins');
  t.equal(await addr([files.arg as string], both), '127.0.0.1:3', 'then the argument');
  t.equal(await addr([], both), '127.0.0.1:5', 'then BERTH_CONFIG');
  t.equal(await addr([], { REGISTRY_CONFIGURATION_PATH: files.registry as string }), '127.0.0.1:8', 'then REGISTRY_CONFIGURATION_PATH');
  t.equal(await addr([]), ':5000', 'else the defaults');
});

t.test('berth config check: validates, prints the effective configuration with secrets redacted', async (t) => {
  const dir = await tempDir(t, 'berth-cli-check-');
  const file = join(dir, 'config.yml');
  await writeFile(
    file,
    `http:
  secret: http-secret-value
storage:
  s3:
    bucket: registry
    region: eu-west-1
    accesskey: AKIAEXAMPLEKEY
    secretkey: s3-secret-value
    sessiontoken: s3-session-value
  cache:
    blobdescriptor: inmemory
redis:
  addr: 127.0.0.1:6379
  password: redis-secret-value
proxy:
  remoteurl: https://registry-1.docker.io
  username: hubuser
  password: hub-secret-value
notifications:
  endpoints:
    - name: hook
      url: https://hooks.example.com/registry
      headers:
        Authorization: [Bearer hook-secret-value]
`,
  );
  const r = await runBerth(['config', 'check', file]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /bucket: registry/);
  t.match(r.stdout, /driver: s3/);
  t.match(r.stdout, /remoteurl: https:\/\/registry-1\.docker\.io/);
  for (const secret of [
    'http-secret-value',
    'AKIAEXAMPLEKEY',
    's3-secret-value',
    's3-session-value',
    'redis-secret-value',
    'hub-secret-value',
    'hook-secret-value',
  ]) {
    t.notMatch(r.output, secret, `${secret} is not printed`);
  }
  t.match(r.stdout, /<redacted>/);
  t.match(r.stderr, /warning: storage\.cache: accepted for registry:2 compatibility/, 'warnings on stderr');

  const bad = join(dir, 'bad.yml');
  await writeFile(bad, 'auth:\n  htpasswd:\n    realm: r\n');
  const invalid = await runBerth(['config', 'check', bad]);
  t.equal(invalid.code, 1, 'an invalid file exits 1');
  t.match(invalid.stderr, /auth\.htpasswd\.path: required/, 'checks of the auth section run too');
  const quiet = await runBerth(['config', 'check', '-q', file]);
  t.equal(quiet.code, 0);
  t.equal(quiet.stdout, '', '--quiet prints nothing on success');
});

t.test('berth fsck --repair on the command line: a second run finds nothing', async (t) => {
  const berth = await startBerth(t);
  const client = new RegistryClient(berth.url);
  const img = await client.pushImage('app', 'v1', [randomLayer(3000)]);
  const dir = await tempDir(t, 'berth-cli-fsck-');
  const cfg = join(dir, 'config.yml');
  await writeFile(cfg, `log:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: ${berth.root}\n`);
  const file = blobFile(berth.root, img.manifest.digest);
  const bytes = await readFile(file);
  bytes[5] = (bytes[5] ?? 0) ^ 0xff;
  await writeFile(file, bytes);

  const found = await runBerth(['fsck', cfg]);
  t.equal(found.code, 1, 'problems: exit 1');
  t.match(found.stdout, /corrupt blob/);
  const repair = await runBerth(['fsck', '--repair', cfg]);
  t.equal(repair.code, 1);
  t.match(repair.stdout, /\[quarantined\]/);
  t.match(repair.stdout, /dangling link: app: tag v1 points at a missing manifest .*\[removed\]/);
  const again = await runBerth(['fsck', cfg]);
  t.equal(again.code, 0, `a second run is clean: ${again.stdout}`);
  t.match(again.stdout, /0 problems/);
});
