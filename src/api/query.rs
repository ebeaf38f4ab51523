//! Query strings of the listings: `name=value` pairs, each name known and given at most once, so
//! that a typo or a repeated parameter never silently lists something else. Values are taken as
//! they are: every value a listing takes (ids, numbers, statuses) never needs escaping.

use super::error::ApiError;
use crate::sale::model::is_valid_id;

/// The values of `names` in `query`, in the order of `names`. Refuses a pair without `=`, a name
/// not in `names` and a name given twice; `takes` says what the endpoint takes, for the errors
/// (for example "`GET /v1/sales` takes `after` and `limit`").
pub fn params<'q, const N: usize>(
    query: &'q str,
    names: [&str; N],
    takes: &str,
) -> Result<[Option<&'q str>; N], ApiError> {
    let mut values = [None; N];
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(ApiError::invalid_query(format!(
                "query parameters take a value; {takes}"
            )));
        };
        let Some(slot) = names.iter().position(|known| *known == name) else {
            return Err(ApiError::invalid_query(format!(
                "unknown query parameter; {takes}"
            )));
        };
        if values[slot].replace(value).is_some() {
            return Err(ApiError::invalid_query(format!(
                "`{name}` is given more than once"
            )));
        }
    }
    Ok(values)
}

/// A page size: digits only, 1 to `max`; `default` when the query gave none.
pub fn limit(value: Option<&str>, max: usize, default: usize) -> Result<usize, ApiError> {
    let Some(value) = value else {
        return Ok(default);
    };
    digits::<usize>(value)
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::invalid_query(format!("`limit` must be an integer from 1 to {max}"))
        })
}

/// A page's start: digits only, from 0; 0 when the query gave none.
pub fn offset(value: Option<&str>) -> Result<u64, ApiError> {
    let Some(value) = value else {
        return Ok(0);
    };
    digits(value).ok_or_else(|| ApiError::invalid_query("`offset` must be a non-negative integer"))
}

/// `value` as a number if it is decimal digits only (no sign, no space) that fit `T`.
fn digits<T: std::str::FromStr>(value: &str) -> Option<T> {
    value
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| value.parse().ok())
        .flatten()
}

/// An id parameter (a SKU or a user id: 1 to 64 characters from `[A-Za-z0-9_-]`); `what` names
/// it in the error ("a SKU", "a user id").
pub fn id<'q>(name: &str, value: Option<&'q str>, what: &str) -> Result<Option<&'q str>, ApiError> {
    match value {
        Some(value) if !is_valid_id(value) => Err(ApiError::invalid_query(format!(
            "`{name}` must be {what}: 1 to 64 characters from [A-Za-z0-9_-]"
        ))),
        value => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_known_given_once_and_valued() {
        let takes = "this takes `a` and `b`";
        assert_eq!(params("", ["a", "b"], takes).ok(), Some([None, None]));
        assert_eq!(
            params("b=2&a=1&", ["a", "b"], takes).ok(),
            Some([Some("1"), Some("2")])
        );
        for bad in ["a", "c=1", "a=1&a=1", "a=1&b"] {
            let error = params(bad, ["a", "b"], takes).expect_err(bad);
            assert_eq!((error.status, error.code), (400, "invalid_query"), "{bad}");
        }
    }

    #[test]
    fn limits_are_plain_integers_in_range() {
        assert_eq!(limit(None, 10, 5).ok(), Some(5));
        assert_eq!(limit(Some("10"), 10, 5).ok(), Some(10));
        for bad in ["0", "11", "-1", "+5", "", "99999999999999999999999"] {
            assert!(limit(Some(bad), 10, 5).is_err(), "{bad}");
        }
    }
}
