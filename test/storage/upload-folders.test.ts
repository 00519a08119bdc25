import t from 'tap';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import { RegistryStore } from '../../src/storage/registry-store.js';
import { UploadDataStore } from '../../src/storage/upload-data-store.js';
import { tempDir } from '../helpers/ports.js';

/**
 * UploadDataStore keeps a completed upload's empty folder for the next upload of its repository (removing a directory
 * can wait seconds for the disk: see `finish`), for at most ten minutes.
 */
t.test('a kept upload folder is taken by the next upload within ten minutes, and removed after that', async (t) => {
  const root = await tempDir(t, 'berth-upload-folders-');
  const driver = new FilesystemDriver({ rootDirectory: root });
  t.teardown(() => driver.close());
  const store = new UploadDataStore(driver, new RegistryStore(driver));
  const uploads = join(root, 'docker/registry/v2/repositories/r/_uploads');

  const first = await store.start('r', new Date());
  t.same(await readdir(join(uploads, first)), ['startedat']);
  await store.finish('r', first);
  const kept = await readdir(uploads);
  t.equal(kept.length, 1);
  t.not(kept[0], first, 'kept under a new id');
  t.same(await readdir(join(uploads, kept[0] as string)), [], 'empty');

  const second = await store.start('r', new Date());
  t.equal(second, kept[0], 'the next upload takes it');
  await store.finish('r', second);
  const keptAgain = (await readdir(uploads))[0] as string;

  const now = Date.now;
  t.teardown(() => {
    Date.now = now;
  });
  Date.now = () => now() + 10 * 60_000 + 1;
  const third = await store.start('r', new Date());
  t.not(third, keptAgain, 'a folder kept longer than ten minutes is not taken');
  await store.settle();
  t.same(await readdir(uploads), [third], 'it was removed');
});
