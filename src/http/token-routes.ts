import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { parseBasic } from '../auth/basic.js';
import { parseScopes, type TokenIssuer, type TokenResponse } from '../auth/token-server.js';
import type { TokenSigner } from '../auth/signer.js';
import { registryError } from '../errors/registry-error.js';
import { sendError } from './error-handler.js';

function list(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === 'string');
  return [];
}

function one(v: unknown): string | undefined {
  return list(v)[0];
}

const FORM = 'application/x-www-form-urlencoded';

/** Builds the Fastify plugin serving `/auth/token`, `/auth/jwks.json` and `/auth/cert.pem`. */
export function tokenRoutes(issuer: TokenIssuer, signer: TokenSigner): FastifyPluginAsync {
  return async (app) => {
    if (app.hasContentTypeParser(FORM)) app.removeContentTypeParser(FORM);
    app.addContentTypeParser(FORM, { parseAs: 'string', bodyLimit: 64 * 1024 }, (_req, body, done) => {
      const params = new URLSearchParams(String(body));
      const out: Record<string, string[]> = {};
      for (const [k, v] of params) (out[k] ??= []).push(v);
      done(null, out);
    });

    // The same error JSON as the /v2/ API, from the one place that writes it.
    app.setErrorHandler((err, request, reply) => sendError(err, request, reply));

    const checkService = (service: string | undefined): void => {
      if (service === undefined || service === issuer.service) return;
      throw registryError('BAD_REQUEST', { service }, { message: `unknown service ${JSON.stringify(service)}` });
    };

    const send = (reply: FastifyReply, body: TokenResponse): FastifyReply =>
      reply.headers({ 'cache-control': 'no-store', pragma: 'no-cache' }).send(body);

    // Docker token spec: GET with optional Basic credentials; `offline_token=true` asks for a refresh token.
    app.get('/auth/token', async (req: FastifyRequest, reply) => {
      const q = req.query as Record<string, unknown>;
      checkService(one(q.service));
      const creds = parseBasic(typeof req.headers.authorization === 'string' ? req.headers.authorization : undefined);
      const account = creds ? await issuer.login(req.ip, creds.name, creds.password, req.id) : undefined;
      return send(reply, await issuer.issue(account, parseScopes(list(q.scope)), one(q.offline_token) === 'true', { ip: req.ip, requestId: req.id }));
    });

    // Docker OAuth2 token spec: POST form with grant_type=password or refresh_token; access_type=offline asks for
    // a refresh token.
    app.post('/auth/token', async (req, reply) => {
      const body = req.body;
      if (typeof body !== 'object' || body === null || Array.isArray(body)) {
        throw registryError('BAD_REQUEST', undefined, { message: `expected a ${FORM} body` });
      }
      const form = body as Record<string, unknown>;
      checkService(one(form.service));
      const grantType = one(form.grant_type);
      let account: string;
      if (grantType === 'password') {
        const username = one(form.username);
        const password = one(form.password);
        if (!username || password === undefined) {
          throw registryError('BAD_REQUEST', undefined, { message: 'username and password are required' });
        }
        account = await issuer.login(req.ip, username, password, req.id);
      } else if (grantType === 'refresh_token') {
        const refresh = one(form.refresh_token);
        if (!refresh) throw registryError('BAD_REQUEST', undefined, { message: 'refresh_token is required' });
        account = await issuer.redeem(req.ip, refresh, req.id);
      } else {
        throw registryError('BAD_REQUEST', { grantType: grantType ?? '' }, { message: `unsupported grant_type ${JSON.stringify(grantType ?? '')}` });
      }
      return send(
        reply,
        await issuer.issue(account, parseScopes(list(form.scope)), one(form.access_type) === 'offline', { ip: req.ip, requestId: req.id }),
      );
    });

    app.get('/auth/jwks.json', async (_req, reply) => reply.header('cache-control', 'max-age=300').send({ keys: [signer.jwk()] }));

    app.get('/auth/cert.pem', async (_req, reply) => reply.type('application/x-pem-file').send(signer.certificatePem));
  };
}
