//! Byte sizes and durations, one grammar each for recipes, cluster specs and the command line.

/// A size in bytes: a number (`4096`, `1.5`) with an optional binary unit `K`, `M`, `G`, `T` (any
/// case, optionally followed by `iB` or `B`): `80G`, `512MiB`, `1.5T`, `64k`. Fractions are exact
/// and rounded to the nearest byte. Zero is a valid size here; callers that need more say so.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size (examples: 80G, 512M, 1.5T, 4096)");
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{s:?}: unknown size unit {c:?} (use K, M, G or T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, "0"));
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(frac) || frac.len() > 18 {
        return Err(bad());
    }
    let too_large = || format!("{s:?} is too large");
    let whole: u128 = int.parse::<u128>().map_err(|_| too_large())? << shift;
    let scale = 10u128.pow(frac.len() as u32);
    let f: u128 = frac.parse().map_err(|_| bad())?;
    let part = ((f << shift) + scale / 2) / scale;
    u64::try_from(whole + part).map_err(|_| too_large())
}

/// A size for people: `1.5 GiB`, `512 B`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A duration in whole seconds: `300s`, `5m`, `1h`, `1h30m`, `2d`, or plain seconds (`300`). Zero is
/// refused.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration like 300s, 5m or 1h30m");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let total = match t.parse::<u64>() {
        Ok(n) => n,
        Err(_) => {
            let mut total: u64 = 0;
            let mut num = String::new();
            for c in t.chars() {
                if c.is_ascii_digit() {
                    num.push(c);
                    continue;
                }
                let mult = match c {
                    's' => 1,
                    'm' => 60,
                    'h' => 3600,
                    'd' => 86400,
                    _ => return Err(bad()),
                };
                let n: u64 = num.parse().map_err(|_| bad())?;
                total = n
                    .checked_mul(mult)
                    .and_then(|x| total.checked_add(x))
                    .ok_or_else(bad)?;
                num.clear();
            }
            if !num.is_empty() {
                return Err(bad());
            }
            total
        }
    };
    if total == 0 {
        return Err(format!("{s:?} is zero"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("80G"), Ok(80 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("0.1K"), Ok(102));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(
            parse_size("16383P").unwrap_err(),
            "\"16383P\": unknown size unit 'P' (use K, M, G or T)"
        );
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size(".5G").is_err());
        assert!(parse_size("1.G").is_err());
        assert!(parse_size("NaNG").is_err());
        assert!(parse_size("inf").is_err());
        assert_eq!(
            parse_size("16777216T").unwrap_err(),
            "\"16777216T\" is too large"
        );
        assert_eq!(parse_size("16777215T"), Ok(16777215 << 40));
        assert_eq!(human_size(3 << 29), "1.5 GiB");
        assert_eq!(human_size(512), "512 B");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300s"), Ok(300));
        assert_eq!(parse_duration("300"), Ok(300));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("5m3").is_err());
        assert!(parse_duration("").is_err());
    }

    proptest! {
        #[test]
        fn whole_sizes_round_trip(n in 0u64..(1 << 40), unit in 0usize..5) {
            let (suffix, shift) = [("", 0), ("K", 10), ("M", 20), ("G", 30), ("T", 40)][unit];
            let n = n >> shift.min(24);
            prop_assert_eq!(parse_size(&format!("{n}{suffix}")), Ok(n << shift));
        }

        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = parse_size(&s);
            let _ = parse_duration(&s);
        }
    }
}
