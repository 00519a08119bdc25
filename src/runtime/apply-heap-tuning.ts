/** Imported first by main.ts: berth's heap flags are set before the other modules load (see heap-tuning.ts). */
import { applyHeapTuning } from './heap-tuning.js';

applyHeapTuning();
