//! The block cipher of the 9B management key (SP 800-78-4 Table 6-2: 3DES, AES-128/192/256),
//! used one block at a time by the challenge–response protocol on both sides.

use cipher::{BlockDecrypt, BlockEncrypt, KeyInit};

use crate::piv::Algorithm;

/// The block size of the management-key algorithm, the size of witnesses and challenges.
pub fn block_size(alg: Algorithm) -> Option<usize> {
    match alg {
        Algorithm::Tdes => Some(8),
        Algorithm::Aes128 | Algorithm::Aes192 | Algorithm::Aes256 => Some(16),
        _ => None,
    }
}

/// Encrypts (or decrypts) one block; `None` when the algorithm is not symmetric or the key
/// or block has the wrong size.
pub fn crypt_block(alg: Algorithm, key: &[u8], block: &[u8], encrypt: bool) -> Option<Vec<u8>> {
    fn run<C: BlockEncrypt + BlockDecrypt + KeyInit>(
        key: &[u8],
        block: &[u8],
        encrypt: bool,
    ) -> Option<Vec<u8>> {
        let cipher = C::new_from_slice(key).ok()?;
        let mut buf = block.to_vec();
        let b = cipher::generic_array::GenericArray::from_mut_slice(&mut buf);
        if encrypt {
            cipher.encrypt_block(b);
        } else {
            cipher.decrypt_block(b);
        }
        Some(buf)
    }
    if Some(block.len()) != block_size(alg) || Some(key.len()) != alg.symmetric_key_len() {
        return None;
    }
    match alg {
        Algorithm::Tdes => run::<des::TdesEde3>(key, block, encrypt),
        Algorithm::Aes128 => run::<aes::Aes128>(key, block, encrypt),
        Algorithm::Aes192 => run::<aes::Aes192>(key, block, encrypt),
        Algorithm::Aes256 => run::<aes::Aes256>(key, block, encrypt),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes128_matches_fips197_vector() {
        // FIPS 197 Appendix C.1.
        let key = hex::decode("000102030405060708090a0b0c0d0e0f").unwrap();
        let pt = hex::decode("00112233445566778899aabbccddeeff").unwrap();
        let ct = crypt_block(Algorithm::Aes128, &key, &pt, true).unwrap();
        assert_eq!(hex::encode(&ct), "69c4e0d86a7b0430d8cdb78070b4c55a");
        assert_eq!(
            crypt_block(Algorithm::Aes128, &key, &ct, false).unwrap(),
            pt
        );
    }

    #[test]
    fn rejects_wrong_sizes() {
        assert!(crypt_block(Algorithm::Tdes, &[0; 24], &[0; 16], true).is_none());
        assert!(crypt_block(Algorithm::Aes256, &[0; 24], &[0; 16], true).is_none());
        assert!(crypt_block(Algorithm::EccP256, &[0; 24], &[0; 8], true).is_none());
    }
}
