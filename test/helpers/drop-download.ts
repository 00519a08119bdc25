import { get as httpGet, type OutgoingHttpHeaders } from 'node:http';

/**
 * GETs `path` and destroys the connection once more than `after` bytes of the body arrived (a client that gives up
 * on a download); resolves with the bytes received. Rejects on a status other than 200.
 */
export function dropDownload(port: number, path: string, after: number, headers: OutgoingHttpHeaders = {}): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const req = httpGet({ host: '127.0.0.1', port, path, headers }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
      let got = 0;
      res.on('data', (chunk: Buffer) => {
        got += chunk.length;
        if (got > after) {
          req.destroy();
          resolve(got);
        }
      });
    });
    req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
  });
}
