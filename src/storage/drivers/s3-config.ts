/** `storage.s3` is parsed with the rest of the configuration (src/config/s3.ts); re-exported for the driver's users. */
export { MAX_SINGLE_OBJECT, MIN_PART_SIZE, parseS3Config, type S3DriverOptions } from '../../config/s3.js';
