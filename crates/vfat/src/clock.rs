//! Dates: the caller's epoch as the FAT driver's clock, and FAT timestamps read back.

use std::sync::Mutex;

/// A FAT timestamp (local time without a zone; kiln writes UTC), to the second FAT keeps:
/// modification times have a 2-second resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// 1980 to 2107.
    pub year: u16,
    /// 1 to 12.
    pub month: u8,
    /// 1 to 31.
    pub day: u8,
    /// 0 to 23.
    pub hour: u8,
    /// 0 to 59.
    pub minute: u8,
    /// 0 to 59 (even in a modification time).
    pub second: u8,
}

/// 1980-01-01T00:00:00Z, the first instant FAT records.
pub(crate) const FAT_EPOCH: i64 = 315_532_800;
/// 2107-12-31T23:59:59Z, the last one.
pub(crate) const FAT_END: i64 = 4_354_819_199;

impl Timestamp {
    /// The UTC calendar time of `epoch` (seconds since 1970-01-01 UTC) as FAT stores it: times
    /// before 1980 become 1980-01-01 00:00:00, and the second is rounded down to even; `None`
    /// after 2107.
    pub fn from_epoch(epoch: i64) -> Option<Timestamp> {
        if epoch > FAT_END {
            return None;
        }
        let t = epoch.max(FAT_EPOCH);
        let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
        // Civil date from days since 1970-01-01 (proleptic Gregorian), counting years from March
        // so that the leap day ends the year.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Some(Timestamp {
            year: u16::try_from(year).ok()?,
            month: month as u8,
            day: day as u8,
            hour: (secs / 3600) as u8,
            minute: (secs / 60 % 60) as u8,
            second: (secs % 60 / 2 * 2) as u8,
        })
    }

    pub(crate) fn from_fat(dt: fatfs::DateTime) -> Timestamp {
        Timestamp {
            year: dt.date.year,
            month: dt.date.month as u8,
            day: dt.date.day as u8,
            hour: dt.time.hour as u8,
            minute: dt.time.min as u8,
            second: dt.time.sec as u8,
        }
    }

    pub(crate) fn to_fat(self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: fatfs::Date {
                year: self.year,
                month: u16::from(self.month),
                day: u16::from(self.day),
            },
            time: fatfs::Time {
                hour: u16::from(self.hour),
                min: u16::from(self.minute),
                sec: u16::from(self.second),
                millis: 0,
            },
        }
    }
}

impl std::fmt::Display for Timestamp {
    /// `2026-01-01 00:00:00`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// A fatfs clock that always answers with one time.
#[derive(Debug)]
pub(crate) struct FixedClock(Timestamp);

impl fatfs::TimeProvider for FixedClock {
    fn get_current_date(&self) -> fatfs::Date {
        self.0.to_fat().date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.0.to_fat()
    }
}

/// fatfs 0.3 takes its clock as `&'static`: one clock per distinct time, made once and kept for
/// the life of the process (a few bytes per epoch a process ever uses).
static CLOCKS: Mutex<Vec<&'static FixedClock>> = Mutex::new(Vec::new());

pub(crate) fn clock(at: Timestamp) -> &'static FixedClock {
    let mut clocks = CLOCKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(c) = clocks.iter().find(|c| c.0 == at) {
        return c;
    }
    let c: &'static FixedClock = Box::leak(Box::new(FixedClock(at)));
    clocks.push(c);
    c
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        let t = Timestamp::from_epoch(1_767_225_600).unwrap();
        assert_eq!(t.to_string(), "2026-01-01 00:00:00");
        let t = Timestamp::from_epoch(951_827_697).unwrap();
        assert_eq!(t.to_string(), "2000-02-29 12:34:56");
        assert_eq!(
            Timestamp::from_epoch(0).unwrap().to_string(),
            "1980-01-01 00:00:00"
        );
        assert_eq!(
            Timestamp::from_epoch(FAT_END).unwrap().to_string(),
            "2107-12-31 23:59:58"
        );
        assert_eq!(Timestamp::from_epoch(FAT_END + 1), None);
        let a = Timestamp::from_epoch(1_700_000_000).unwrap();
        assert!(std::ptr::eq(clock(a), clock(a)));
    }
}
