//! The few DER envelopes aws-lc-rs takes keys in, written from key parts a
//! JWK or a PEM block gives: an RSA public key from `n` and `e`, and a
//! PKCS#8 wrapper around a PKCS#1 RSA private key. Encoding only: every
//! parse of these bytes is aws-lc-rs's or x509-parser's.

fn len(out: &mut Vec<u8>, n: usize) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 6);
    out.push(tag);
    len(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// A non-negative INTEGER from big-endian bytes.
fn uint(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let mut body = Vec::with_capacity(bytes.len() - start + 1);
    if bytes.get(start).is_none_or(|b| b & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(&bytes[start..]);
    tlv(0x02, &body)
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`
/// (RFC 8017 A.1.1).
pub fn rsa_public_key(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut body = uint(n);
    body.extend(uint(e));
    tlv(0x30, &body)
}

/// A PKCS#8 `PrivateKeyInfo` holding a PKCS#1 `RSAPrivateKey`.
pub fn pkcs8_from_pkcs1(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption, NULL }
    const RSA_ALG_ID: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(&RSA_ALG_ID);
    body.extend(tlv(0x04, pkcs1));
    tlv(0x30, &body)
}

/// The modulus size in bits of a DER `RSAPublicKey`.
pub fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    use x509_parser::der_parser::der::parse_der_sequence;
    let (_, seq) = parse_der_sequence(der).ok()?;
    let items = seq.as_sequence().ok()?;
    let n = items.first()?.as_slice().ok()?;
    let n = &n[n.iter().position(|b| *b != 0)?..];
    Some(n.len() * 8 - n[0].leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_lengths() {
        assert_eq!(uint(&[0x00, 0x7f]), vec![0x02, 0x01, 0x7f]);
        assert_eq!(uint(&[0x80]), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(uint(&[]), vec![0x02, 0x01, 0x00]);
        let long = tlv(0x04, &[0u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let k = rsa_public_key(&[0xc0; 256], &[1, 0, 1]);
        assert_eq!(rsa_modulus_bits(&k), Some(2048));
    }
}
