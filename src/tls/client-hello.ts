/**
 * Reads the ALPN protocol names a TLS ClientHello offers (RFC 8446 §4.1.2, RFC 7301 §3.1), without decrypting
 * anything: the hello is sent in the clear. Used to send ACME's `acme-tls/1` validation connections (RFC 8737) to the
 * challenge certificate before the HTTPS server sees them.
 *
 * Returns `null` while `data` does not yet hold the whole first handshake record, `[]` when the bytes are not a
 * ClientHello or offer no ALPN.
 */
export function offeredAlpnProtocols(data: Buffer): string[] | null {
  // TLSPlaintext: type(1)=22 handshake, legacy_record_version(2), length(2), fragment.
  if (data.length < 5) return null;
  if (data[0] !== 22) return [];
  const recordLength = data.readUInt16BE(3);
  if (data.length < 5 + recordLength) return null;
  const hello = data.subarray(5, 5 + recordLength);
  // Handshake: msg_type(1)=1 client_hello, length(3), then the body (assumed to fit in the first record).
  if (hello.length < 4 || hello[0] !== 1) return [];
  let at = 4 + 2 + 32; // legacy_version, random
  const skip = (lengthBytes: 1 | 2): boolean => {
    if (at + lengthBytes > hello.length) return false;
    const n = lengthBytes === 1 ? hello[at]! : hello.readUInt16BE(at);
    at += lengthBytes + n;
    return at <= hello.length;
  };
  if (!skip(1) || !skip(2) || !skip(1)) return []; // legacy_session_id, cipher_suites, legacy_compression_methods
  if (at + 2 > hello.length) return [];
  const end = Math.min(hello.length, at + 2 + hello.readUInt16BE(at));
  at += 2;
  while (at + 4 <= end) {
    const type = hello.readUInt16BE(at);
    const length = hello.readUInt16BE(at + 2);
    at += 4;
    if (type === 16) {
      // application_layer_protocol_negotiation: ProtocolName protocol_name_list<2..2^16-1>, each <1..2^8-1>.
      const protocols: string[] = [];
      let p = at + 2;
      const listEnd = Math.min(at + length, end);
      while (p < listEnd) {
        const n = hello[p]!;
        protocols.push(hello.subarray(p + 1, p + 1 + n).toString('latin1'));
        p += 1 + n;
      }
      return protocols;
    }
    at += length;
  }
  return [];
}
