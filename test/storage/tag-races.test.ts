import t from 'tap';
import { spawnBerth } from '../helpers/berth-process.js';
import { tempDir } from '../helpers/ports.js';
import { OCI_MANIFEST, RegistryClient, type ErrorBody } from '../helpers/registry-client.js';

/**
 * Issue 11, item 5: "Concurrent PUT and DELETE of one tag, or of one manifest by digest, answer 500 (ENOTEMPTY and
 * ENOENT from the filesystem) ... Each request must succeed or fail with a spec error code; no 500 from a race
 * between clients." Against a real berth process on the filesystem driver: every PUT answers 201 and every DELETE
 * 202 or 404 with error JSON, never a 5xx, and afterwards the tag either resolves or is absent.
 */

const ROUNDS = 200;

t.test('racing PUT and DELETE of one tag and one manifest never answer 5xx', async (t) => {
  const root = await tempDir(t, 'berth-races-');
  const berth = await spawnBerth(t, {
    REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: root,
    REGISTRY_STORAGE_DELETE_ENABLED: 'true',
    REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED: 'false',
    REGISTRY_LOG_LEVEL: 'warn',
  });
  const client = new RegistryClient(berth.url);
  const image = await client.pushImage('race/app', 'v1', [Buffer.from('a layer')]);
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: image.config, layers: image.layers }));
  const put = (ref: string) => client.request('PUT', `/v2/race/app/manifests/${ref}`, { body, headers: { 'Content-Type': OCI_MANIFEST } });
  const statuses = new Map<string, number>();
  const count = (what: string, status: number) => statuses.set(`${what} ${status}`, (statuses.get(`${what} ${status}`) ?? 0) + 1);
  const badBodies: string[] = [];

  for (let round = 0; round < ROUNDS; round++) {
    // Half the rounds race on the tag, half on the manifest by digest; both delete while a PUT is writing.
    const byDigest = round % 2 === 1;
    const target = byDigest ? image.manifest.digest : 'v1';
    const replies = await Promise.all([put('v1'), client.request('DELETE', `/v2/race/app/manifests/${target}`), put('v1')]);
    const [p1, d, p2] = replies;
    count('PUT', p1!.status);
    count('PUT', p2!.status);
    count(byDigest ? 'DELETE digest' : 'DELETE tag', d!.status);
    for (const r of replies) {
      if (r.status >= 400) {
        try {
          const e = JSON.parse(r.body.toString()) as ErrorBody;
          if (!e.errors?.[0]?.code) badBodies.push(r.body.toString());
        } catch {
          badBodies.push(r.body.toString());
        }
      }
    }
  }
  const fivexx = [...statuses].filter(([k]) => / 5\d\d$/.test(k));
  t.same(fivexx, [], `no 5xx (all: ${JSON.stringify([...statuses])})`);
  t.same(badBodies, [], 'every error has a spec error code');
  t.notOk(/ENOTEMPTY|ENOENT/.test(berth.output()), 'no filesystem race in the log');
  // After the races, one more PUT settles the state: the tag resolves to the manifest.
  t.equal((await put('v1')).status, 201);
  const got = await client.getManifest('race/app', 'v1');
  t.equal(got.status, 200);
  t.equal(got.digest, image.manifest.digest);
});
