import t from 'tap';
import { parseRangeHeader } from '../../src/http/range.js';
import { label } from '../helpers/table.js';

/**
 * `Range: bytes=...` against a resource of `size` bytes (RFC 9110 §14): null means "serve the whole body",
 * 'unsatisfiable' a 416, else the inclusive byte positions.
 */
const rows: Array<[header: string | undefined, size: number, expected: ReturnType<typeof parseRangeHeader>]> = [
  // no usable range: the full body
  [undefined, 100, null],
  ['', 100, null],
  ['bytes=-', 100, null],
  ['bytes=0-1,5-6', 100, null], // several ranges
  ['items=0-1', 100, null], // another unit
  ['bytes = 0-1', 100, null],
  ['bytes=a-b', 100, null],
  ['bytes=1.5-2', 100, null],
  ['bytes=--1', 100, null],
  ['bytes=0-1 ,', 100, null],
  // first-last
  ['bytes=0-99', 100, { start: 0, end: 99 }],
  ['bytes=10-20', 100, { start: 10, end: 20 }],
  ['bytes=99-99', 100, { start: 99, end: 99 }],
  ['bytes=00-01', 100, { start: 0, end: 1 }],
  [' bytes=0-1 ', 100, { start: 0, end: 1 }],
  ['bytes=0-1000', 100, { start: 0, end: 99 }], // last past the end is cut to the end
  ['bytes=0-99999999999999999999999', 100, { start: 0, end: 99 }],
  // first-
  ['bytes=0-', 100, { start: 0, end: 99 }],
  ['bytes=42-', 100, { start: 42, end: 99 }],
  // suffix
  ['bytes=-10', 100, { start: 90, end: 99 }],
  ['bytes=-100', 100, { start: 0, end: 99 }],
  ['bytes=-200', 100, { start: 0, end: 99 }],
  // unsatisfiable: 416
  ['bytes=-0', 100, 'unsatisfiable'],
  ['bytes=100-', 100, 'unsatisfiable'],
  ['bytes=100-200', 100, 'unsatisfiable'],
  ['bytes=20-10', 100, 'unsatisfiable'],
  ['bytes=0-', 0, 'unsatisfiable'],
  ['bytes=-1', 0, 'unsatisfiable'],
  ['bytes=0-0', 0, 'unsatisfiable'],
];

t.test('parseRangeHeader', async (t) => {
  for (const [header, size, expected] of rows) {
    t.same(parseRangeHeader(header, size), expected, `${label(header)} of ${size} bytes`);
  }
});
