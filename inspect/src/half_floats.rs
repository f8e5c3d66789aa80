//! Per-location statistics stored as IEEE half floats: two bytes a value instead of four, which
//! halves the aligned and fixed model files. Half floats keep three significant digits
//! (a level near 200 to within 0.06, of a 0–255 scale) and no value a model stores is near
//! their limits (6e-5 to 65 504). For `#[serde(with = "crate::half_floats")]` on a `Vec<f32>`:
//! the values go out as one byte string, little-endian, which every format stores compactly.
//! Models round their statistics with [`rounded`] when they learn them, so a model scores the
//! same before and after a trip through its file.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

/// The value a half float keeps of `v`.
pub fn rounded(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

pub fn serialize<S: Serializer>(values: &[f32], serializer: S) -> Result<S::Ok, S::Error> {
    let bytes: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    serializer.serialize_bytes(&bytes)
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f32>, D::Error> {
    deserializer.deserialize_bytes(HalfFloats)
}

struct HalfFloats;

/// Half floats from their little-endian bytes; an odd byte count is an error.
fn decode<E: de::Error>(bytes: &[u8]) -> Result<Vec<f32>, E> {
    if !bytes.len().is_multiple_of(2) {
        return Err(E::invalid_length(bytes.len(), &"an even number of bytes"));
    }
    Ok(bytes
        .chunks_exact(2)
        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect())
}

impl<'de> Visitor<'de> for HalfFloats {
    type Value = Vec<f32>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("half floats as little-endian bytes")
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<f32>, E> {
        decode(bytes)
    }

    /// Formats without a byte string type (JSON) write the bytes as a sequence of numbers.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<f32>, A::Error> {
        // The format's length hint is not trusted with an allocation.
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        decode(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Stats {
        #[serde(with = "super")]
        values: Vec<f32>,
    }

    #[test]
    fn values_come_back_to_three_digits_in_half_the_bytes() {
        let values: Vec<f32> = (0..1000).map(|i| i as f32 * 0.2561 + 0.05).collect();
        let stats = Stats {
            values: values.clone(),
        };
        let bytes = postcard::to_stdvec(&stats).unwrap();
        assert!(bytes.len() <= 2 * values.len() + 3, "{} bytes", bytes.len());
        let back: Stats = postcard::from_bytes(&bytes).unwrap();
        for (a, b) in values.iter().zip(&back.values) {
            assert!((a - b).abs() <= a.abs() / 1024.0, "{a} came back as {b}");
        }
        let json: Stats = serde_json::from_str(&serde_json::to_string(&stats).unwrap()).unwrap();
        assert_eq!(json, back);
    }

    #[test]
    fn an_odd_byte_count_is_refused() {
        // A postcard byte string: its length (3), then the bytes.
        assert!(postcard::from_bytes::<Stats>(&[3, 0, 60, 0]).is_err());
        assert!(postcard::from_bytes::<Stats>(&[2, 0, 60]).is_ok());
    }
}
