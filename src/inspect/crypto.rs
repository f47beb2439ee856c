//! Cryptocurrency wallet address detector: Bitcoin legacy and P2SH
//! (base58check), Bitcoin segwit (bech32 / bech32m checksum), Ethereum
//! (EIP-55 mixed-case checksum).
//!
//! All three carry a checksum, so a hit is validated; Ethereum addresses
//! written in one case have none and rank lower.

use regex::Regex;
use sha2::{Digest, Sha256};
use sha3::Keccak256;

use super::{compile_builtin, context_near, finding, Category, Detector, Finding, Prescan};

pub(super) fn detectors() -> Vec<Box<dyn Detector>> {
    vec![Box::new(Wallet::new())]
}

const BECH32: &str = r"(?-u:\b)(?:bc1|BC1|tb1)[02-9ac-hj-np-zAC-HJ-NP-Z]{8,87}(?-u:\b)";
const ETHEREUM: &str = r"(?-u:\b)0x[0-9a-fA-F]{40}(?-u:\b)";
const WALLET_CONTEXT: &[&str] = &["wallet", "btc", "bitcoin", "eth", "ethereum", "address", "send", "crypto", "usdt"];

struct Wallet {
    bech32: Regex,
    ethereum: Regex,
}

impl Wallet {
    fn new() -> Self {
        Wallet { bech32: compile_builtin(BECH32), ethereum: compile_builtin(ETHEREUM) }
    }
}

impl Detector for Wallet {
    fn find(&self, text: &str, _: &Prescan, segment: usize, out: &mut Vec<Finding>) {
        let mut push = |span: std::ops::Range<usize>, conf: (f32, f32), v: &'static str| {
            let conf = if context_near(text, &span, WALLET_CONTEXT) { conf.1 } else { conf.0 };
            out.push(finding(Category::Pii, "crypto_wallet", segment, span, conf, v));
        };
        for span in long_tokens(text.as_bytes(), 26, 35) {
            let s = &text.as_bytes()[span.clone()];
            if matches!(s[0], b'1' | b'3') && base58check_valid(s) {
                push(span, (0.9, 0.95), "base58check");
            }
        }
        let (bech32_near, hex_near) = wallet_prefixes(text.as_bytes());
        if bech32_near {
            for m in self.bech32.find_iter(text) {
                if bech32_valid(m.as_str()) {
                    push(m.range(), (0.9, 0.95), "bech32");
                }
            }
        }
        if hex_near {
            for m in self.ethereum.find_iter(text) {
                let hex = &m.as_str()[2..];
                let lower = hex.bytes().all(|b| !b.is_ascii_uppercase());
                let upper = hex.bytes().all(|b| !b.is_ascii_lowercase());
                if lower || upper {
                    // No checksum to test: a 20-byte hex value is usually an
                    // address, but could be any hash.
                    push(m.range(), (0.5, 0.85), "pattern");
                } else if eip55_valid(hex) {
                    push(m.range(), (0.9, 0.95), "eip55");
                }
            }
        }
    }
}

/// Whether `bytes` contains "bc1", "BC1" or "tb1" (a bech32 address can
/// be there), and whether it contains "0x", in one pass over the rarer
/// bytes '1' and 'x' instead of four substring searches.
fn wallet_prefixes(bytes: &[u8]) -> (bool, bool) {
    let (mut bech32, mut hex) = (false, false);
    for i in memchr::memchr2_iter(b'1', b'x', bytes) {
        if bytes[i] == b'1' {
            bech32 |= i >= 2 && matches!(&bytes[i - 2..i], b"bc" | b"BC" | b"tb");
        } else {
            hex |= i >= 1 && bytes[i - 1] == b'0';
        }
        if bech32 && hex {
            break;
        }
    }
    (bech32, hex)
}

/// Alphanumeric runs of `min..=max` bytes between non-word bytes. Every
/// such run covers a byte at a multiple of `min`, so only those bytes are
/// probed: ordinary words are shorter and are skipped after a short look.
fn long_tokens(bytes: &[u8], min: usize, max: usize) -> Vec<std::ops::Range<usize>> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut probe = 0;
    while probe < bytes.len() {
        if !bytes[probe].is_ascii_alphanumeric() {
            probe += min;
            continue;
        }
        let mut start = probe;
        while start > 0 && word(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = probe;
        while end < bytes.len() && word(bytes[end]) {
            end += 1;
        }
        if (min..=max).contains(&(end - start)) {
            out.push(start..end);
        }
        probe = (end + min).max(probe + min);
    }
    out
}

const BASE58_ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Decode base58 into a 25-byte P2PKH/P2SH payload and check the version
/// byte and the double-SHA-256 checksum.
fn base58check_valid(s: &[u8]) -> bool {
    let mut out = [0u8; 25];
    for &c in s {
        let Some(mut carry) = BASE58_ALPHABET.iter().position(|&a| a == c) else {
            return false;
        };
        for byte in out.iter_mut().rev() {
            carry += usize::from(*byte) * 58;
            *byte = (carry & 0xff) as u8;
            carry >>= 8;
        }
        if carry != 0 {
            return false;
        }
    }
    // Leading '1's encode leading zero bytes; the decoded number must use
    // exactly the remaining width.
    let ones = s.iter().take_while(|&&c| c == b'1').count();
    let zeros = out.iter().take_while(|&&b| b == 0).count();
    if ones != zeros {
        return false;
    }
    if !matches!(out[0], 0x00 | 0x05) {
        return false;
    }
    let hash = Sha256::digest(Sha256::digest(&out[..21]));
    hash[..4] == out[21..]
}

const BECH32_CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

/// BIP-173 / BIP-350 checksum over a single-case address.
fn bech32_valid(s: &str) -> bool {
    let has_lower = s.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = s.bytes().any(|b| b.is_ascii_uppercase());
    if has_lower && has_upper {
        return false;
    }
    let s = s.to_ascii_lowercase();
    let Some((hrp, data)) = s.rsplit_once('1') else {
        return false;
    };
    if data.len() < 6 {
        return false;
    }
    let mut values = Vec::with_capacity(hrp.len() * 2 + 1 + data.len());
    values.extend(hrp.bytes().map(|b| b >> 5));
    values.push(0);
    values.extend(hrp.bytes().map(|b| b & 31));
    for c in data.bytes() {
        match BECH32_CHARSET.iter().position(|&x| x == c) {
            Some(v) => values.push(v as u8),
            None => return false,
        }
    }
    let check = polymod(&values);
    // Witness v0 uses bech32 (constant 1), v1+ bech32m.
    check == 1 || check == 0x2bc8_30a3
}

fn polymod(values: &[u8]) -> u32 {
    const GEN: [u32; 5] = [0x3b6a_57b2, 0x2650_8e6d, 0x1ea1_19fa, 0x3d42_33dd, 0x2a14_62b3];
    let mut chk: u32 = 1;
    for &v in values {
        let top = chk >> 25;
        chk = ((chk & 0x1ff_ffff) << 5) ^ u32::from(v);
        for (i, g) in GEN.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

/// EIP-55: a hex letter is uppercase exactly when the matching nibble of
/// keccak256(lowercase address) is 8 or more.
fn eip55_valid(hex: &str) -> bool {
    let lower = hex.to_ascii_lowercase();
    let hash = Keccak256::digest(lower.as_bytes());
    hex.bytes().enumerate().all(|(i, c)| {
        let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0xf;
        match c {
            b'a'..=b'f' => nibble < 8,
            b'A'..=b'F' => nibble >= 8,
            _ => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Range;

    fn hits(text: &str) -> Vec<(Range<usize>, &'static str)> {
        let mut out = Vec::new();
        Wallet::new().find(text, &Prescan::of(text), 0, &mut out);
        out.into_iter().map(|f| (f.span, f.validator)).collect()
    }

    #[test]
    fn bitcoin_base58check() {
        let genesis = "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa";
        assert_eq!(hits(genesis), vec![(0..34, "base58check")]);
        let p2sh = "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy";
        assert_eq!(hits(&format!("btc: {p2sh}")), vec![(5..39, "base58check")]);
        // One character changed: checksum fails.
        assert!(hits("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb").is_empty());
        assert!(hits("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLz").is_empty());
    }

    #[test]
    fn bitcoin_bech32() {
        let v0 = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq";
        assert_eq!(hits(&format!("send to {v0}")), vec![(8..50, "bech32")]);
        let taproot = "bc1p5d7rjq7g6rdk2yhzks9smlaqtedr4dekq08ge8ztwac72sfr9rusxg3297";
        assert_eq!(hits(taproot), vec![(0..taproot.len(), "bech32")]);
        assert_eq!(hits("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4"), vec![(0..42, "bech32")]);
        assert!(hits("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdp").is_empty());
        assert!(hits("bc1qAr0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq").is_empty());
    }

    #[test]
    fn ethereum_eip55() {
        let good = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        assert_eq!(hits(good), vec![(0..42, "eip55")]);
        // One letter's case flipped: checksum fails.
        assert!(hits("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD").is_empty());
        let lower = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed";
        assert_eq!(hits(lower), vec![(0..42, "pattern")]);
        assert!(hits("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed00").is_empty());
    }

    #[test]
    fn wallet_prefixes_match_substring_search() {
        let texts = [
            "",
            "1",
            "x",
            "0x",
            "bc1",
            "BC1",
            "tb1",
            "Bc1",
            "bC1 0X",
            "abc1 0x1",
            "xx0",
            "tb 1",
            "11bc",
            "0 x",
            "address bc1qxy and 0xABC",
            "tb1tb1",
            "x0x",
        ];
        for text in texts {
            let bech32 = text.contains("bc1") || text.contains("BC1") || text.contains("tb1");
            let hex = text.contains("0x");
            assert_eq!(wallet_prefixes(text.as_bytes()), (bech32, hex), "{text:?}");
        }
    }
}
