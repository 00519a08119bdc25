/**
 * Commands beyond `serve`, each in its own module; importing this file registers them all.
 */
import '../gc/commands.js';
import './user-commands.js';
import './catalog-commands.js';

export {};
