import { benchMirror } from '../proxy/bench-mirror.js';
import { extraCases } from './cases.js';

// The pull-through cache: cold and warm pulls of a 256 MiB layer through berth, and 20 concurrent cold pulls.
extraCases.set('mirror', async () => ({ ...(await benchMirror()) }));
