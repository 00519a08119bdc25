import t from 'tap';
import { randomBytes } from 'node:crypto';
import { startBerth } from '../helpers/berth.js';
import { sha256 } from '../helpers/digest.js';

t.test('berth.gc runs garbage collection inside the server and reports it in the metrics', async (t) => {
  const b = await startBerth(t, { berth: { gc: { interval: '1s', grace: '0s' } } });
  const orphan = randomBytes(50_000);
  const digest = sha256(orphan);
  t.equal((await fetch(`${b.url}/v2/gc/orphan/blobs/uploads/?digest=${digest}`, { method: 'POST', body: orphan })).status, 201);
  t.equal((await fetch(`${b.url}/v2/gc/orphan/blobs/${digest}`, { method: 'HEAD' })).status, 200);
  let status = 200;
  for (let i = 0; i < 100 && status === 200; i++) {
    await new Promise((r) => setTimeout(r, 200));
    status = (await fetch(`${b.url}/v2/gc/orphan/blobs/${digest}`, { method: 'HEAD' })).status;
  }
  t.equal(status, 404, 'the unreferenced blob was collected');
  // The blob goes mid-run; the metrics are set when the run ends (it goes on to old uploads): wait for that.
  let metrics = '';
  for (let i = 0; i < 100 && !metrics.includes(`berth_gc_reclaimed_bytes_total ${orphan.length}`); i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, 200));
    metrics = await (await fetch(`${b.url}/metrics`)).text();
  }
  t.match(metrics, new RegExp(`berth_gc_reclaimed_bytes_total ${orphan.length}`));
  t.notMatch(metrics, /berth_gc_last_run_timestamp_seconds 0\n/);
});
