import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { builtinAuth, writeUsers } from '../helpers/auth.js';
import { startBerth } from '../helpers/berth.js';
import { captureAccessLog, ClientError, headDigest, MANIFEST_ACCEPT, registryHost } from '../helpers/containers.js';
import { makeRunnableImageLayout, type RunnableImage } from '../helpers/cri.js';
import { skipUnlessDockerd, startDockerd, type Dockerd } from '../helpers/dockerd.js';
import { blobPath } from '../helpers/oci-layout.js';
import { tempDir } from '../helpers/ports.js';
import { dockerRef, skopeo } from '../helpers/skopeo.js';
import { sha256 } from '../helpers/digest.js';

/**
 * Issue 2's promise with the Docker daemon (Debian's docker.io 20.10): `docker push localhost:5000/app:1` to berth
 * over plain HTTP (127.0.0.0/8 is an insecure registry by Docker's default) and pull it back, byte for byte; and
 * issue 4's: `docker login` against berth's built-in token server, then push and pull with the stored credentials,
 * and after `docker logout` no push.
 *
 * The seed image is pushed with skopeo (an OCI manifest with one real gzip tar layer, which dockerd can unpack);
 * the daemon pulls it, tags it into another repository and pushes it: dockerd remembers where the layer came from
 * and mounts it across repositories instead of uploading it again.
 */

/** What `docker image inspect` says about one image. */
interface Inspected {
  id: string;
  repoDigests: string[];
  layers: string[];
}

/** `docker image inspect`: image ID, RepoDigests and the diff IDs of its layers. */
async function inspect(dockerd: Dockerd, ref: string): Promise<Inspected> {
  const out = await dockerd.docker(['image', 'inspect', '--format', '{{json .Id}} {{json .RepoDigests}} {{json .RootFS.Layers}}', ref]);
  const [id, repoDigests, layers] = out.stdout.trim().split(' ');
  return {
    id: JSON.parse(id ?? '""') as string,
    repoDigests: JSON.parse(repoDigests ?? '[]') as string[],
    layers: JSON.parse(layers ?? '[]') as string[],
  };
}

/** The `<tag>: digest: sha256:... size: N` line `docker push` ends with. */
function pushedDigest(stdout: string, tag: string): { digest: string; size: number } | undefined {
  const m = new RegExp(`^${tag.replace(/\./g, '\\.')}: digest: (sha256:[0-9a-f]{64}) size: (\\d+)$`, 'm').exec(stdout);
  return m?.[1] && m[2] ? { digest: m[1], size: Number(m[2]) } : undefined;
}

/** A `docker` run expected to fail: resolves with the ClientError (exit status, output), fails the test otherwise. */
async function failing(run: Promise<unknown>): Promise<ClientError> {
  const outcome = await run.then(
    () => new Error('the command succeeded'),
    (err: unknown) => err,
  );
  if (outcome instanceof ClientError) return outcome;
  throw outcome;
}

/** The distribution API with optional headers (a Bearer token); body and digest of a manifest GET. */
async function getManifest(
  url: string,
  repo: string,
  ref: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Buffer; type: string | null }> {
  const res = await fetch(`${url}/v2/${repo}/manifests/${ref}`, { headers: { accept: MANIFEST_ACCEPT, ...headers } });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()), type: res.headers.get('content-type') };
}

/** The layer blob as berth serves it from `repo`, compared with the seed layout's file, byte for byte. */
async function layerBytesMatch(url: string, repo: string, src: string, image: RunnableImage, headers: Record<string, string> = {}): Promise<boolean> {
  const res = await fetch(`${url}/v2/${repo}/blobs/${image.layer}`, { headers });
  if (res.status !== 200) return false;
  const served = Buffer.from(await res.arrayBuffer());
  return served.equals(await readFile(blobPath(src, image.layer)));
}

/** A token from berth's built-in token server (Basic credentials, as docker sends them) for `scope`. */
async function token(url: string, user: string, password: string, scope: string): Promise<Record<string, string>> {
  const res = await fetch(`${url}/auth/token?service=berth&scope=${encodeURIComponent(scope)}`, {
    headers: { authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` },
  });
  const body = (await res.json()) as { token: string };
  return { authorization: `Bearer ${body.token}` };
}

/** What `docker login` stored in the CLI's config.json for `host` (undefined when nothing). */
async function storedAuth(dockerd: Dockerd, host: string): Promise<unknown> {
  const file = join(dockerd.configDir, 'config.json');
  if (!existsSync(file)) return undefined;
  const config = JSON.parse(await readFile(file, 'utf8')) as { auths?: Record<string, unknown> };
  return config.auths?.[host];
}

t.test('the Docker daemon pushes to and pulls from berth', { skip: skipUnlessDockerd() }, async (t) => {
  const dockerd = await startDockerd(t);

  await t.test('plain HTTP: push, cross-repository mount, pull back byte for byte', async (t) => {
    const log = captureAccessLog();
    const berth = await startBerth(t, { log: { level: 'info', accesslog: { disabled: false } } }, { logger: log.logger });
    const host = registryHost(berth.url);
    const src = await tempDir(t, 'berth-e2e-docker-src-');
    const image = await makeRunnableImageLayout(src, { tag: 'seed', fileSize: 256 * 1024 });
    await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:seed`, dockerRef(berth.url, 'seed', '1')]);

    const seedRef = `${host}/seed:1`;
    const pulledSeed = await dockerd.docker(['pull', seedRef]);
    t.match(pulledSeed.stdout, `Digest: ${image.manifest}`, 'docker pull of the seed reports its manifest digest');
    const seed = await inspect(dockerd, seedRef);
    t.same(seed.repoDigests, [`${host}/seed@${image.manifest}`], 'seed RepoDigests: the pushed manifest');
    t.equal(seed.id, image.config, 'seed image ID: its config digest');
    t.same(seed.layers, [image.diffId], 'seed layers: the diff ID of the tar');

    const appRef = `${host}/app:1.2`;
    await dockerd.docker(['tag', seedRef, appRef]);
    const mark = log.entries().length;
    const push = await dockerd.docker(['push', appRef]);
    const pushed = pushedDigest(push.stdout, '1.2');
    t.ok(pushed, 'docker push prints the manifest digest', { stdout: push.stdout });
    if (!pushed) return;
    t.equal(await headDigest(berth.url, 'app', '1.2'), pushed.digest, 'HEAD app:1.2: the digest docker push printed');
    // distribution-spec: "mount ... from ... If the registry has the blob in the source repository, it SHOULD
    // respond with 201 Created": dockerd remembers the layer came from seed and mounts it instead of uploading.
    t.match(push.stdout, /Mounted from seed/, 'docker push reports the layer mounted from seed', { stdout: push.stdout });
    const pushLog = log
      .entries()
      .slice(mark)
      .map((e) => ({ ...e, query: new URL(e.url, berth.url).searchParams }));
    t.ok(
      pushLog.some(
        (e) =>
          e.method === 'POST' &&
          e.url.startsWith('/v2/app/blobs/uploads/?') &&
          e.query.get('mount') === image.layer &&
          e.query.get('from') === 'seed' &&
          e.status === 201,
      ),
      'berth answered POST /v2/app/blobs/uploads/?mount=<layer>&from=seed with 201 Created',
      { accessLog: log.dump() },
    );
    // The config blob is uploaded (dockerd keeps no source for it); the layer must not be.
    t.notOk(
      pushLog.some((e) => e.method === 'PUT' && e.url.startsWith('/v2/app/blobs/uploads/') && e.query.get('digest') === image.layer),
      'the layer was not uploaded again',
      { accessLog: log.dump() },
    );
    const manifest = await getManifest(berth.url, 'app', '1.2');
    t.equal(manifest.status, 200);
    t.equal(sha256(manifest.body), pushed.digest, 'the stored manifest bytes hash to the pushed digest');
    t.equal(manifest.body.length, pushed.size, 'and have the size docker push printed');
    t.equal(manifest.type, 'application/vnd.docker.distribution.manifest.v2+json', 'docker pushes a schema2 manifest');
    const parsed = JSON.parse(manifest.body.toString('utf8')) as { config: { digest: string }; layers: Array<{ digest: string }> };
    t.equal(parsed.config.digest, image.config, 'the pushed config is the seed config');
    t.same(
      parsed.layers.map((l) => l.digest),
      [image.layer],
      'the pushed layer is the seed layer',
    );
    t.ok(await layerBytesMatch(berth.url, 'app', src, image), 'app serves the layer byte for byte as the seed layout has it');

    await dockerd.docker(['rmi', appRef, seedRef]);
    t.equal((await dockerd.docker(['images', '-q'])).stdout.trim(), '', 'no image left in the daemon');
    const pulled = await dockerd.docker(['pull', appRef]);
    t.match(pulled.stdout, `Digest: ${pushed.digest}`, 'docker pull app:1.2 reports the pushed digest');
    const app = await inspect(dockerd, appRef);
    t.same(app.repoDigests, [`${host}/app@${pushed.digest}`], 'RepoDigests: the pushed digest');
    t.equal(app.id, seed.id, 'same image ID (config digest) as the seed');
    t.same(app.layers, seed.layers, 'same layers as the seed');
    await dockerd.docker(['rmi', appRef]);
  });

  await t.test('built-in token server: docker login, push, pull, logout', async (t) => {
    const dir = await tempDir(t, 'berth-e2e-docker-auth-');
    const users = await writeUsers(dir);
    const berth = await startBerth(t, { auth: builtinAuth(users) });
    const host = registryHost(berth.url);
    const src = await tempDir(t, 'berth-e2e-docker-auth-src-');
    const image = await makeRunnableImageLayout(src, { tag: 'seed', fileSize: 128 * 1024 });
    await skopeo([
      'copy',
      '--preserve-digests',
      '--dest-tls-verify=false',
      '--dest-creds',
      'alice:alice-pw',
      `oci:${src}:seed`,
      dockerRef(berth.url, 'team/seed', '1'),
    ]);
    const seedRef = `${host}/team/seed:1`;
    const appRef = `${host}/team/app:1`;

    const anonymous = await failing(dockerd.docker(['pull', seedRef]));
    t.not(anonymous.exitCode, 0, 'without login docker pull of a private repository fails');
    t.match(anonymous.stderr, /unauthorized|authentication required|denied/i);

    const wrong = await failing(dockerd.docker(['login', host, '-u', 'alice', '--password-stdin'], { stdin: 'wrong-pw\n' }));
    t.not(wrong.exitCode, 0, 'docker login with a wrong password exits non-zero');
    t.match(wrong.stderr, /unauthorized|incorrect username or password|authentication required/i);
    t.equal(await storedAuth(dockerd, host), undefined, 'nothing stored for a failed login');

    const login = await dockerd.docker(['login', host, '-u', 'alice', '--password-stdin'], { stdin: 'alice-pw\n' });
    t.match(login.stdout, /Login Succeeded/, 'docker login with the right password succeeds');
    t.ok(await storedAuth(dockerd, host), 'the credentials are stored in the CLI config');

    await dockerd.docker(['pull', seedRef]);
    t.same((await inspect(dockerd, seedRef)).repoDigests, [`${host}/team/seed@${image.manifest}`], 'pulled the seed with the login');
    await dockerd.docker(['tag', seedRef, appRef]);
    const push = await dockerd.docker(['push', appRef]);
    const pushed = pushedDigest(push.stdout, '1');
    t.ok(pushed, 'docker push with the login prints the manifest digest', { stdout: push.stdout });
    if (!pushed) return;
    const auth = await token(berth.url, 'alice', 'alice-pw', 'repository:team/app:pull');
    t.equal(await headDigest(berth.url, 'team/app', '1', auth), pushed.digest, 'HEAD team/app:1 (with a token): the pushed digest');
    t.ok(await layerBytesMatch(berth.url, 'team/app', src, image, auth), 'team/app serves the layer byte for byte');

    await dockerd.docker(['rmi', appRef, seedRef]);
    await dockerd.docker(['pull', appRef]);
    t.same((await inspect(dockerd, appRef)).repoDigests, [`${host}/team/app@${pushed.digest}`], 'docker pull with the login: the pushed digest');

    await dockerd.docker(['logout', host]);
    t.equal(await storedAuth(dockerd, host), undefined, 'docker logout removed the credentials');
    const otherRef = `${host}/team/other:1`;
    await dockerd.docker(['tag', appRef, otherRef]);
    const refused = await failing(dockerd.docker(['push', otherRef]));
    t.not(refused.exitCode, 0, 'after logout docker push exits non-zero');
    t.match(refused.stderr, /unauthorized|authentication required|denied/i);
    t.notOk(existsSync(join(berth.root, 'docker/registry/v2/repositories/team/other')), 'nothing written for the refused push');
    await dockerd.docker(['rmi', appRef, otherRef]);
  });
});
