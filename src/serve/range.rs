//! The `Range` header of NAR requests (RFC 9110 §14): one `bytes` range is honoured; a header
//! that is not a single byte range is ignored (the whole body is sent), and a range outside the
//! body is 416.

/// What to send of a body of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// The whole body (no Range header, or one that is ignored).
    Whole,
    /// Bytes `start..end`, as 206.
    Part(u64, u64),
    /// 416: the range starts past the end.
    Unsatisfiable,
}

/// Interprets a `Range` header value against a body of `size` bytes.
pub fn parse_range(value: &str, size: u64) -> RangeAnswer {
    let Some(spec) = value
        .trim()
        .split_once('=')
        .filter(|(unit, _)| unit.trim().eq_ignore_ascii_case("bytes"))
        .map(|(_, spec)| spec.trim())
    else {
        return RangeAnswer::Whole;
    };
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeAnswer::Whole;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if a.is_empty() {
        let Some(n) = digits(b).then(|| b.parse::<u64>().ok()).flatten() else {
            return RangeAnswer::Whole;
        };
        if n == 0 || size == 0 {
            return RangeAnswer::Unsatisfiable;
        }
        return RangeAnswer::Part(size.saturating_sub(n), size);
    }
    let Some(start) = digits(a).then(|| a.parse::<u64>().ok()).flatten() else {
        return RangeAnswer::Whole;
    };
    let end = if b.is_empty() {
        size
    } else {
        match digits(b).then(|| b.parse::<u64>().ok()).flatten() {
            Some(last) if last >= start => last.saturating_add(1).min(size),
            _ => return RangeAnswer::Whole,
        }
    };
    if start >= size {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Part(start, end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeAnswer::*;

    #[test]
    fn single_ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Part(0, 10));
        assert_eq!(parse_range("bytes=90-", 100), Part(90, 100));
        assert_eq!(parse_range("bytes=-10", 100), Part(90, 100));
        assert_eq!(parse_range("bytes=-1000", 100), Part(0, 100));
        assert_eq!(parse_range("bytes=50-1000", 100), Part(50, 100));
        assert_eq!(parse_range("Bytes = 1-1", 100), Part(1, 2));
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        for ignored in [
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=5-1",
            "bytes=x-1",
            "bytes=+1-2",
            "bytes",
            "bytes=-",
            "",
        ] {
            assert_eq!(parse_range(ignored, 100), Whole, "{ignored}");
        }
    }
}
