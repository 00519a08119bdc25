import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { RedisEventQueue } from '../../src/events/redis-queue.js';
import { StorageEventQueue } from '../../src/events/storage-queue.js';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import { createS3Driver } from '../../src/storage/drivers/s3.js';
import { startRedis } from '../helpers/redis.js';
import { s3StorageSection, startS3Server } from '../helpers/s3-server.js';
import { eventQueueSuite } from '../suites/event-queue-suite.js';

t.test('storage (filesystem driver)', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'berth-event-queue-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await eventQueueSuite(t, 'StorageEventQueue', async (ns) => new StorageEventQueue(new FilesystemDriver({ rootDirectory: join(root, ns) })), false);

  t.test('one file per event under /berth/events/<queue>/, nothing else left behind', async (t) => {
    const dir = join(root, 'layout');
    const q = new StorageEventQueue(new FilesystemDriver({ rootDirectory: dir }));
    await q.push('ep-1', [
      { id: '1', timestamp: '', action: 'pull', target: { repository: 'r' }, request: {}, actor: {}, source: { addr: '', instanceID: '' } },
    ]);
    const files = await readdir(join(dir, 'berth', 'events', 'ep-1'));
    t.equal(files.length, 1);
    t.match(files[0], /^\d{15}-\d{10}-[0-9a-f]{8}\.json$/);
    await q.ack('ep-1', await q.peek('ep-1', 1));
    t.same(await readdir(join(dir, 'berth', 'events', 'ep-1')), []);
  });
});

t.test('storage (S3 driver, strict test S3 server)', async (t) => {
  const server = await startS3Server(t, { pageSize: 4 });
  await eventQueueSuite(
    t,
    'StorageEventQueue on S3',
    async (ns) => {
      const driver = createS3Driver({ ...s3StorageSection(server), rootdirectory: `/${ns}/` }, () => undefined);
      const queue = new StorageEventQueue(driver);
      return Object.assign(queue, { close: () => driver.close() });
    },
    false,
  );
});

t.test('redis', async (t) => {
  const redis = await startRedis(t);
  await eventQueueSuite(t, 'RedisEventQueue', async (ns) => RedisEventQueue.connect({ addr: redis.addr, db: 0, keyPrefix: `test-${ns}:` }), true);
});
