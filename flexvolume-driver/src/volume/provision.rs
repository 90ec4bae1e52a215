//! CreateVolume / capacity for the CSI controller: backing files in the state dir,
//! idempotent by name.

use super::{VolumeRecord, VolumeSpec, Volumes};
use crate::{Error, Result};

/// Smallest volume made: room for an ext4 journal.
pub const MIN_SIZE: u64 = 16 << 20;

/// A CSI capacity range in bytes; 0 means unspecified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SizeRange {
    pub required: u64,
    pub limit: u64,
}

impl SizeRange {
    /// The size to provision: `required` (or `default`), at least [`MIN_SIZE`], rounded
    /// up to MiB, and within `limit`.
    pub fn pick(&self, default: u64) -> Result<u64> {
        let want = if self.required > 0 {
            self.required
        } else {
            default
        };
        let mut size = super::round_size(want.max(MIN_SIZE));
        if self.limit > 0 && size > self.limit {
            let down = self.limit / (1 << 20) * (1 << 20);
            if down >= self.required.max(MIN_SIZE) {
                size = down;
            } else {
                return Err(Error::OutOfRange(format!(
                    "cannot make a volume of at least {} and at most {} bytes (minimum {MIN_SIZE}, whole MiB)",
                    self.required, self.limit
                )));
            }
        }
        Ok(size)
    }

    /// Whether an existing volume of `size` bytes satisfies the range.
    pub fn fits(&self, size: u64) -> bool {
        size >= self.required && (self.limit == 0 || size <= self.limit)
    }
}

impl Volumes {
    /// Creates volume `id` (a sparse backing file), or returns the existing one if it
    /// was created with the same parameters and its size fits `range`. Returns the
    /// record and whether it was created now.
    pub fn create(
        &self,
        id: &str,
        spec: &VolumeSpec,
        range: SizeRange,
    ) -> Result<(VolumeRecord, bool)> {
        let _lock = self.lock(id)?;
        if let Some(rec) = self.get(id)? {
            let fs_ok = spec.fs_type.as_ref().is_none_or(|f| {
                f.is_empty() || crate::sys::fs::family(f) == crate::sys::fs::family(&rec.fs_type)
            });
            if rec.parameters == spec.parameters && range.fits(rec.size_bytes) && fs_ok {
                // A retry after a crash between record and backing file finishes here.
                let rec = self.ensure_record(id, spec)?;
                return Ok((rec, false));
            }
            return Err(Error::AlreadyExists {
                name: id.to_string(),
                detail: format!(
                    "it has {} bytes, {} filesystem and parameters {:?}",
                    rec.size_bytes, rec.fs_type, rec.parameters
                ),
            });
        }
        let size = range.pick(spec.size_bytes.unwrap_or(self.default_size))?;
        let spec = VolumeSpec {
            size_bytes: Some(size),
            ..spec.clone()
        };
        Ok((self.ensure_record(id, &spec)?, true))
    }

    /// Bytes free for new backing files.
    pub fn available_bytes(&self) -> Result<u64> {
        let mut dir = self.state_dir.clone();
        while !dir.exists() {
            if !dir.pop() {
                break;
            }
        }
        Ok(crate::sys::fs::usage(&dir)?.available_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_ranges() {
        let r = SizeRange::default();
        assert_eq!(r.pick(1 << 30).unwrap(), 1 << 30);
        let r = SizeRange {
            required: 100 << 20,
            limit: 0,
        };
        assert_eq!(r.pick(1 << 30).unwrap(), 100 << 20);
        let r = SizeRange {
            required: 1,
            limit: 0,
        };
        assert_eq!(r.pick(1 << 30).unwrap(), MIN_SIZE);
        let r = SizeRange {
            required: (100 << 20) + 1,
            limit: (101 << 20) - 1,
        };
        assert!(r.pick(0).is_err());
        let r = SizeRange {
            required: 50 << 20,
            limit: (60 << 20) + 5,
        };
        assert_eq!(r.pick(0).unwrap(), 50 << 20);
        let r = SizeRange {
            required: 0,
            limit: 32 << 20,
        };
        assert_eq!(r.pick(1 << 30).unwrap(), 32 << 20);
        assert!(
            SizeRange {
                required: 10,
                limit: 20
            }
            .fits(15)
        );
        assert!(
            !SizeRange {
                required: 10,
                limit: 20
            }
            .fits(25)
        );
    }
}
