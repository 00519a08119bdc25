/**
 * Commands beyond `serve`, each in its own module; importing this file registers them all.
 */
export {};
