import t from 'tap';
import { randomBytes } from 'node:crypto';
import { writeUsers } from '../helpers/auth.js';
import { startBerth } from '../helpers/berth.js';
import { tempDir } from '../helpers/ports.js';
import { sha256 } from '../helpers/digest.js';

t.test('the registry exposes request, byte and upload metrics on /metrics', async (t) => {
  const b = await startBerth(t);
  const blob = randomBytes(123_457);
  const digest = sha256(blob);
  t.equal((await fetch(`${b.url}/v2/m/x/blobs/uploads/?digest=${digest}`, { method: 'POST', body: blob })).status, 201);
  const got = await fetch(`${b.url}/v2/m/x/blobs/${digest}`);
  t.equal((await got.arrayBuffer()).byteLength, blob.length);
  t.equal((await fetch(`${b.url}/v2/m/x/manifests/nope`)).status, 404);
  const res = await fetch(`${b.url}/metrics`);
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type') ?? '', /^text\/plain/);
  const text = await res.text();
  t.match(text, /berth_http_requests_total\{method="POST",route="upload-start",status="201"\} 1/);
  t.match(text, /berth_http_requests_total\{method="GET",route="blob",status="200"\} 1/);
  t.match(text, /berth_http_requests_total\{method="GET",route="manifest",status="404"\} 1/);
  t.match(text, new RegExp(`berth_http_received_bytes_total\\{method="POST",route="upload-start"\\} ${blob.length}`));
  t.match(text, new RegExp(`berth_http_sent_bytes_total\\{method="GET",route="blob"\\} ${blob.length}`));
  t.match(text, /berth_uploads_in_progress 0/);
  t.match(text, /berth_http_request_duration_seconds_bucket/);
});

t.test('berth.metrics.enabled: false removes the endpoint', async (t) => {
  const b = await startBerth(t, { berth: { metrics: { enabled: false } } });
  t.equal((await fetch(`${b.url}/metrics`)).status, 404);
});

t.test('/metrics on the registry address needs the same authentication as /v2/ when auth is on', async (t) => {
  // Issue 17: "/metrics on the registry port is not open to everyone while /v2/ needs auth".
  const dir = await tempDir(t, 'berth-metrics-auth-');
  const users = await writeUsers(dir, { alice: 'alice-pw' });
  const b = await startBerth(t, { auth: { htpasswd: { realm: 'berth', path: users } } });
  const anonymous = await fetch(`${b.url}/metrics`);
  t.equal(anonymous.status, 401, 'refused without credentials');
  t.match(anonymous.headers.get('www-authenticate'), /^Basic realm="berth"/);
  t.notMatch(await anonymous.text(), /berth_http_requests_total/, 'nothing of the exposition');
  const wrong = await fetch(`${b.url}/metrics`, { headers: { authorization: `Basic ${Buffer.from('alice:nope').toString('base64')}` } });
  t.equal(wrong.status, 401);
  const ok = await fetch(`${b.url}/metrics`, { headers: { authorization: `Basic ${Buffer.from('alice:alice-pw').toString('base64')}` } });
  t.equal(ok.status, 200);
  t.match(await ok.text(), /berth_http_requests_total/);
  const open = await startBerth(t);
  t.equal((await fetch(`${open.url}/metrics`)).status, 200, 'without auth it stays open, like /v2/');
});
