import type { Server as NetServer, Socket } from 'node:net';
import { createSecureContext, TLSSocket, type SecureContext, type Server as TlsServer } from 'node:tls';
import { readFile } from 'node:fs/promises';
import type { ServerOptions } from 'node:https';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import { AcmeCertificateSource } from './acme.js';
import { secureContextOf, type CertificateSource } from './certificate-source.js';
import { FileCertificateSource } from './cert-reloader.js';
import { offeredAlpnProtocols } from './client-hello.js';

/** The HTTPS side of the server: fastify's `https` option, and what connects the certificate source to the server. */
export interface HttpsSetup {
  /** Passed to fastify as `https`. */
  options: ServerOptions;
  /** Serves new certificates on new connections, routes ACME challenges, starts and stops with `app`. */
  attach(app: FastifyInstance): void;
}

/** The HTTPS setup `http.tls` asks for, or null for plain HTTP. */
export async function createHttps(config: Config, logger: Logger, pollIntervalMs?: number): Promise<HttpsSetup | null> {
  const tls = config.http.tls;
  if (!tls) return null;
  let source: CertificateSource;
  let acme: AcmeCertificateSource | undefined;
  if (tls.letsencrypt) {
    acme = await AcmeCertificateSource.open({ settings: tls.letsencrypt, logger });
    source = acme;
  } else if (tls.certificate && tls.key) {
    source = await FileCertificateSource.open({ certificate: tls.certificate, key: tls.key, logger, ...(pollIntervalMs ? { pollIntervalMs } : {}) });
  } else {
    return null;
  }

  const clientCA = tls.clientCAs ? await Promise.all(tls.clientCAs.map((f) => readFile(f))) : null;
  // Per-connection contexts carry the client CAs too: with SNI, a client certificate is verified against the context
  // the callback returns, not against the server's options.
  const extra = { ...(clientCA ? { ca: clientCA } : {}), ...(tls.minVersion ? { minVersion: tls.minVersion } : {}) };
  let context: SecureContext | null = null;
  const refresh = () => {
    const pair = source.current();
    context = pair ? createSecureContext({ key: pair.key, cert: pair.cert, ...extra }) : null;
    return pair;
  };
  const initial = refresh();
  const options: ServerOptions = {
    ...(initial ? { key: initial.key, cert: initial.cert } : {}),
    // Every new connection that names a server gets the current certificate, without a restart.
    SNICallback: (_servername, cb) => (context ? cb(null, context) : cb(new Error('no TLS certificate yet'), undefined)),
    ...(tls.minVersion ? { minVersion: tls.minVersion } : {}),
    // http.tls.clientcas (mutual TLS): the handshake fails for a client without a certificate one of these signed.
    ...(clientCA ? { ca: clientCA, requestCert: true, rejectUnauthorized: true } : {}),
  };
  return {
    options,
    attach(app) {
      const server = app.server as unknown as TlsServer;
      source.onChange(() => {
        const pair = refresh();
        // Clients that send no server name (an IP address) get the server's default context: replace it too.
        if (pair) server.setSecureContext({ key: pair.key, cert: pair.cert, ...extra });
      });
      if (acme) routeAcmeChallenges(server, acme, logger);
      app.addHook('onListen', async () => source.start());
      app.addHook('onClose', async () => source.close());
    },
  };
}

/**
 * Sends connections whose ClientHello offers only `acme-tls/1` (the CA validating a TLS-ALPN-01 challenge, RFC 8737
 * §3) to the challenge certificate; every other connection goes to the HTTPS server unchanged. The hello is peeked and
 * put back, so the HTTPS server reads it as if nothing had happened.
 */
function routeAcmeChallenges(server: NetServer, acme: AcmeCertificateSource, logger: Logger): void {
  const handlers = server.listeners('connection') as ((socket: Socket) => void)[];
  server.removeAllListeners('connection');
  server.on('connection', (socket: Socket) => {
    let seen = Buffer.alloc(0);
    const give = (toHttps: boolean) => {
      socket.removeListener('readable', onReadable);
      socket.removeListener('end', onEnd);
      socket.setTimeout(0);
      if (seen.length > 0) socket.unshift(seen);
      if (toHttps) for (const h of handlers) h.call(server, socket);
      else answerChallenge(socket, acme, logger);
    };
    const onReadable = () => {
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) seen = Buffer.concat([seen, chunk]);
      const protocols = offeredAlpnProtocols(seen);
      if (protocols === null && seen.length < 16_384) return;
      give(!(protocols && protocols.length === 1 && protocols[0] === 'acme-tls/1'));
    };
    const onEnd = () => socket.destroy();
    socket.on('readable', onReadable);
    socket.on('end', onEnd);
    socket.on('error', () => socket.destroy());
    socket.setTimeout(30_000, () => socket.destroy());
  });
}

function answerChallenge(socket: Socket, acme: AcmeCertificateSource, logger: Logger): void {
  const tls = new TLSSocket(socket, {
    isServer: true,
    ALPNProtocols: ['acme-tls/1'],
    SNICallback: (servername, cb) => {
      const pair = acme.challengeCertificate(servername);
      if (pair) cb(null, secureContextOf(pair));
      else cb(new Error(`no ACME challenge pending for ${servername}`), undefined);
    },
  });
  tls.on('secure', () => {
    logger.info({ servername: (tls as TLSSocket & { servername?: string }).servername }, 'answered ACME tls-alpn-01 challenge');
    tls.end();
  });
  tls.on('error', () => tls.destroy());
}
