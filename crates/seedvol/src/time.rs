//! UTC calendar conversion of `SOURCE_DATE_EPOCH` (no wall clock anywhere in this crate).

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i64,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl Civil {
    /// Converts seconds since 1970-01-01T00:00:00Z into a proleptic Gregorian UTC date.
    pub fn from_epoch(epoch: u64) -> Self {
        let days = (epoch / 86_400) as i64;
        let secs = epoch % 86_400;
        // Shift the epoch to 0000-03-01 so leap days fall at the end of a 400-year era.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097); // day of era, 0..=146096
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // year of era
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st
        let mp = (5 * doy + 2) / 153; // month index from March
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self {
            year,
            month,
            day,
            hour: (secs / 3600) as u8,
            minute: (secs / 60 % 60) as u8,
            second: (secs % 60) as u8,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        let c = Civil::from_epoch(0);
        assert_eq!((c.year, c.month, c.day, c.hour), (1970, 1, 1, 0));
        // 2000-02-29T12:34:56Z
        let c = Civil::from_epoch(951_827_696);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.second),
            (2000, 2, 29, 12, 34, 56)
        );
        // 2024-12-31T23:59:59Z
        let c = Civil::from_epoch(1_735_689_599);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.second),
            (2024, 12, 31, 23, 59, 59)
        );
    }
}
