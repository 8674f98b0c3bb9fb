//! EventBridge schedule expressions, checked by EventBridge's own grammar before any AWS call:
//! `cron(min hour day-of-month month day-of-week year)` and `rate(N unit)`. Pure.

/// Why a schedule is not valid, in words that say what to fix.
pub(crate) fn validate(expr: &str) -> Result<(), String> {
    let expr = expr.trim();
    if let Some(body) = expr.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
        return validate_rate(body);
    }
    if let Some(body) = expr.strip_prefix("cron(").and_then(|r| r.strip_suffix(')')) {
        return validate_cron(body);
    }
    Err(format!(
        "{expr:?} is neither cron(...) nor rate(...); for example cron(0,30 * * * ? *) or rate(30 minutes)"
    ))
}

/// About how many times a month (30.4 days) a valid expression fires; `None` for cron forms
/// this estimate does not count (`L`, `W`, `#`).
pub(crate) fn runs_per_month(expr: &str) -> Option<f64> {
    let expr = expr.trim();
    if let Some(body) = expr.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
        let mut parts = body.split_whitespace();
        let n: f64 = parts.next()?.parse().ok()?;
        let per_month = match parts.next()?.trim_end_matches('s') {
            "minute" => 30.4 * 24.0 * 60.0,
            "hour" => 30.4 * 24.0,
            "day" => 30.4,
            _ => return None,
        };
        return Some(per_month / n);
    }
    let body = expr.strip_prefix("cron(")?.strip_suffix(')')?;
    let f: Vec<&str> = body.split_whitespace().collect();
    let [min, hour, dom, month, dow, _year] = f.as_slice() else {
        return None;
    };
    let any = |s: &str| s == "*" || s == "?";
    let days = match (any(dom), any(dow)) {
        (true, true) => 30.4,
        (false, _) => count(dom, 1, 31)? as f64 * 30.4 / 31.0,
        (true, false) => count(dow, 1, 7)? as f64 * 30.4 / 7.0,
    };
    let months = count(month, 1, 12)? as f64 / 12.0;
    Some(count(min, 0, 59)? as f64 * count(hour, 0, 23)? as f64 * days * months)
}

/// How many values of `min..=max` a cron field matches (numbers, ranges, steps, lists); `None`
/// for names and the special forms.
fn count(field: &str, min: u32, max: u32) -> Option<usize> {
    values(field, min, max).map(|v| v.len())
}

/// The values a numeric cron field takes, in order; `None` for forms this does not read.
fn values(field: &str, min: u32, max: u32) -> Option<Vec<u32>> {
    let mut hit = vec![false; (max + 1) as usize];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().ok().filter(|s| *s > 0)?),
            None => (item, 1),
        };
        let (from, to) = match range {
            "*" | "?" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                None if step > 1 => (r.parse().ok()?, max),
                None => {
                    let v: u32 = r.parse().ok()?;
                    (v, v)
                }
            },
        };
        let mut v = from;
        while v <= to.min(max) {
            hit[v as usize] = true;
            v += step;
        }
    }
    Some(
        hit.iter()
            .enumerate()
            .filter(|(_, h)| **h)
            .map(|(v, _)| v as u32)
            .collect(),
    )
}

/// The longest time between two runs, in seconds: a rate's period, or for a cron that runs
/// every day of every month the longest gap of its day (the night between the last run and the
/// first). `None` when the days are restricted or the form is not read (`L`, `W`, `#`).
pub(crate) fn longest_gap_seconds(expr: &str) -> Option<u64> {
    let expr = expr.trim();
    if let Some(body) = expr.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
        let mut parts = body.split_whitespace();
        let n: u64 = parts.next()?.parse().ok()?;
        let unit = match parts.next()?.trim_end_matches('s') {
            "minute" => 60,
            "hour" => 3600,
            "day" => 86_400,
            _ => return None,
        };
        return Some(n * unit);
    }
    let body = expr.strip_prefix("cron(")?.strip_suffix(')')?;
    let f: Vec<&str> = body.split_whitespace().collect();
    let [min, hour, dom, month, dow, _year] = f.as_slice() else {
        return None;
    };
    let any = |s: &str| s == "*" || s == "?";
    if !(any(dom) && any(dow) && any(month)) {
        return None;
    }
    let mut times: Vec<u32> = Vec::new();
    for h in values(hour, 0, 23)? {
        for m in values(min, 0, 59)? {
            times.push(h * 60 + m);
        }
    }
    times.sort_unstable();
    let (first, last) = (*times.first()?, *times.last()?);
    let wrap = first + 24 * 60 - last;
    let gap = times.windows(2).map(|w| w[1] - w[0]).chain([wrap]).max()?;
    Some(u64::from(gap) * 60)
}

fn validate_rate(body: &str) -> Result<(), String> {
    let parts: Vec<&str> = body.split_whitespace().collect();
    let [value, unit] = parts.as_slice() else {
        return Err(format!(
            "rate({body}) needs a number and a unit, e.g. rate(5 minutes)"
        ));
    };
    let n: u64 = value
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("rate value {value:?} must be a positive whole number"))?;
    let singular = ["minute", "hour", "day"];
    let plural = ["minutes", "hours", "days"];
    match (n, singular.contains(unit), plural.contains(unit)) {
        (1, true, _) => Ok(()),
        (1, false, true) => Err(format!(
            "rate(1 {unit}) must use the singular: rate(1 {})",
            unit.trim_end_matches('s')
        )),
        (_, false, true) => Ok(()),
        (_, true, _) => Err(format!(
            "rate({n} {unit}) must use the plural: rate({n} {unit}s)"
        )),
        _ => Err(format!(
            "rate unit {unit:?} must be minute(s), hour(s) or day(s)"
        )),
    }
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// Extra tokens allowed: `?`, `L`, `W`, `#`.
    question: bool,
    last: bool,
    weekday: bool,
    hash: bool,
}

const MONTHS: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

const FIELDS: [Field; 6] = [
    Field {
        name: "minutes",
        min: 0,
        max: 59,
        names: &[],
        question: false,
        last: false,
        weekday: false,
        hash: false,
    },
    Field {
        name: "hours",
        min: 0,
        max: 23,
        names: &[],
        question: false,
        last: false,
        weekday: false,
        hash: false,
    },
    Field {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
        question: true,
        last: true,
        weekday: true,
        hash: false,
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: MONTHS,
        question: false,
        last: false,
        weekday: false,
        hash: false,
    },
    Field {
        name: "day-of-week",
        min: 1,
        max: 7,
        names: DAYS,
        question: true,
        last: true,
        weekday: false,
        hash: true,
    },
    Field {
        name: "year",
        min: 1970,
        max: 2199,
        names: &[],
        question: false,
        last: false,
        weekday: false,
        hash: false,
    },
];

impl Field {
    fn value(&self, s: &str) -> Result<u32, String> {
        let upper = s.to_ascii_uppercase();
        if let Some(i) = self.names.iter().position(|n| *n == upper) {
            return Ok(self.min + i as u32);
        }
        let n: u32 = s
            .parse()
            .map_err(|_| format!("{:?} is not a valid {} value", s, self.name))?;
        if n < self.min || n > self.max {
            return Err(format!(
                "{} value {n} is outside {}-{}",
                self.name, self.min, self.max
            ));
        }
        Ok(n)
    }

    fn item(&self, item: &str) -> Result<(), String> {
        let bad = |why: &str| Err(format!("{} {item:?}: {why}", self.name));
        match item {
            "" => return bad("empty item"),
            "*" => return Ok(()),
            "?" if self.question => return Ok(()),
            "?" => return bad("? is allowed only in day-of-month and day-of-week"),
            "L" if self.last => return Ok(()),
            "LW" if self.weekday => return Ok(()),
            _ => {}
        }
        if let Some((base, step)) = item.split_once('/') {
            let step: u32 = step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                format!(
                    "{} {item:?}: the step after / must be a positive number",
                    self.name
                )
            })?;
            if step > self.max {
                return bad("the step is larger than the field's range");
            }
            if base == "*" {
                return Ok(());
            }
            return self
                .range_or_value(base)
                .map_err(|e| format!("{e} (in {item:?})"));
        }
        // Plain values and ranges first: names such as JUL end in a letter used below.
        if self.range_or_value(item).is_ok() {
            return Ok(());
        }
        if let Some(n) = item.strip_suffix('W') {
            if !self.weekday {
                return bad("W is allowed only in day-of-month");
            }
            return self.value(n).map(|_| ());
        }
        if let Some((d, nth)) = item.split_once('#') {
            if !self.hash {
                return bad("# is allowed only in day-of-week");
            }
            self.value(d)?;
            return match nth.parse::<u32>() {
                Ok(1..=5) => Ok(()),
                _ => bad("the number after # must be 1 to 5"),
            };
        }
        if let Some(d) = item.strip_suffix('L')
            && !d.is_empty()
        {
            if !(self.last && self.hash) {
                return bad("nL is allowed only in day-of-week");
            }
            return self.value(d).map(|_| ());
        }
        self.range_or_value(item)
    }

    fn range_or_value(&self, s: &str) -> Result<(), String> {
        match s.split_once('-') {
            Some((a, b)) => {
                self.value(a)?;
                self.value(b)?;
                Ok(())
            }
            None => self.value(s).map(|_| ()),
        }
    }
}

fn validate_cron(body: &str) -> Result<(), String> {
    let parts: Vec<&str> = body.split_whitespace().collect();
    if parts.len() != 6 {
        return Err(format!(
            "cron({body}) has {} fields; EventBridge needs 6: minutes hours day-of-month month day-of-week year, e.g. cron(0,30 * * * ? *)",
            parts.len()
        ));
    }
    for (field, part) in FIELDS.iter().zip(&parts) {
        for item in part.split(',') {
            field.item(item)?;
        }
    }
    let (dom, dow) = (parts[2], parts[4]);
    match (dom == "?", dow == "?") {
        (true, true) => Err("day-of-month and day-of-week cannot both be ?: one of them must be ? and the other a value or *".into()),
        (false, false) => Err(format!(
            "day-of-month {dom:?} and day-of-week {dow:?} cannot both be set: use ? in one of them, e.g. cron(0 12 * * ? *)"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn runs_per_month_of_rates_and_crons() {
        let near = |expr: &str, want: f64| {
            let got = super::runs_per_month(expr).unwrap();
            assert!((got - want).abs() < 0.5, "{expr}: {got} not {want}");
        };
        near("rate(30 minutes)", 1459.2);
        near("rate(1 minute)", 43776.0);
        near("rate(2 hours)", 364.8);
        near("rate(1 day)", 30.4);
        near("cron(0,30 * * * ? *)", 1459.2);
        near("cron(*/15 * * * ? *)", 2918.4);
        near("cron(0 9 ? * 2-6 *)", 5.0 * 30.4 / 7.0);
        near("cron(0 9-17 * * ? *)", 273.6);
        near("cron(0 0 1 * ? *)", 30.4 / 31.0);
        assert_eq!(super::runs_per_month("cron(0 0 L * ? *)"), None);
    }

    use super::validate;

    #[test]
    fn accepts_eventbridge_expressions() {
        for ok in [
            "cron(0,30 * * * ? *)",
            "cron(0 10 * * ? *)",
            "cron(15 12 * * ? *)",
            "cron(0 18 ? * MON-FRI *)",
            "cron(0 8 1 * ? *)",
            "cron(0/15 * * * ? *)",
            "cron(0/10 * ? * MON-FRI *)",
            "cron(0/5 8-17 ? * MON-FRI *)",
            "cron(0 9 ? * 2#1 *)",
            "cron(0 0 L * ? *)",
            "cron(0 0 LW * ? *)",
            "cron(0 0 15W * ? *)",
            "cron(0 0 ? * 6L *)",
            "cron(0 0 ? JAN,JUL SUN 2027-2030)",
            "rate(1 minute)",
            "rate(5 minutes)",
            "rate(1 hour)",
            "rate(12 hours)",
            "rate(1 day)",
            "rate(7 days)",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_with_a_reason() {
        for (bad, says) in [
            ("*/30 * * * *", "neither cron"),
            ("cron(0 * * * *)", "6: minutes"),
            ("cron(0 * * * * *)", "cannot both be set"),
            ("cron(0 * ? * ? *)", "cannot both be ?"),
            ("cron(60 * * * ? *)", "outside 0-59"),
            ("cron(0 24 * * ? *)", "outside 0-23"),
            ("cron(0 0 32 * ? *)", "outside 1-31"),
            ("cron(0 0 ? * MOX *)", "not a valid day-of-week"),
            ("cron(0 0 ? FOO * *)", "not a valid month"),
            ("cron(0 0 ? * 2#6 *)", "1 to 5"),
            ("cron(0 0 3#1 * ? *)", "# is allowed only"),
            ("cron(0 0 ? * 1W *)", "W is allowed only"),
            ("cron(? 0 * * ? *)", "? is allowed only"),
            ("cron(0/0 * * * ? *)", "positive"),
            ("cron(0 0 * * ? 1969)", "outside 1970-2199"),
            ("rate(1 minutes)", "singular"),
            ("rate(5 minute)", "plural"),
            ("rate(0 minutes)", "positive"),
            ("rate(5 weeks)", "minute(s)"),
            ("rate(minutes)", "a number and a unit"),
        ] {
            let err = validate(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
