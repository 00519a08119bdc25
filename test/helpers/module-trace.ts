/**
 * Loaded into a berth child process with `node --import <this file>` (see `nodeArgs` of spawnBerth): when
 * BERTH_MODULE_TRACE names a file, every module the process resolves through the ES module loader (its own files,
 * packages it imports statically or with `await import()`) is appended to that file as a URL, one a line, as it is
 * resolved. Lets a test see which optional packages a configuration loads.
 */
import { register } from 'node:module';

const file = process.env.BERTH_MODULE_TRACE;
if (file) register('./module-trace-hooks.js', import.meta.url, { data: { file } });
