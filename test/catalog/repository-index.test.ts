import { randomUUID } from 'node:crypto';
import t from 'tap';
import { MemoryRepositoryIndex } from '../../src/services/catalog/repository-index.js';
import { RedisRepositoryIndex } from '../../src/services/catalog/redis-repository-index.js';
import { startRedis } from '../helpers/redis.js';
import { repositoryIndexSuite } from '../suites/repository-index-suite.js';

t.test('memory', async (t) => {
  await repositoryIndexSuite(t, 'MemoryRepositoryIndex', async () => new MemoryRepositoryIndex());
});

t.test('redis', async (t) => {
  const redis = await startRedis(t);
  await repositoryIndexSuite(t, 'RedisRepositoryIndex', async () =>
    RedisRepositoryIndex.connect({ addr: redis.addr, db: 0, keyPrefix: `test-${randomUUID()}:` }),
  );

  t.test('two clients on one Redis see each other at once', async (t) => {
    const prefix = `shared-${randomUUID()}:`;
    const a = RedisRepositoryIndex.connect({ addr: redis.addr, db: 0, keyPrefix: prefix });
    const b = RedisRepositoryIndex.connect({ addr: redis.addr, db: 0, keyPrefix: prefix });
    t.teardown(async () => {
      await a.clear();
      await a.close();
      await b.close();
    });
    await a.put({ name: 'x/y', tagCount: 2, size: 3, lastPush: null, description: 'd', stamp: 1 });
    t.strictSame(
      (await b.page(undefined, 10)).map((e) => e.name),
      ['x/y'],
    );
    await b.markBuilt(7);
    t.equal(await a.builtAt(), 7);
  });
});
