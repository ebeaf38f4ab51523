//! A sale's admission mode and its settings in a `PUT /v1/sales/{sku}` body: which fields go
//! with which mode, their defaults, and their checks against each other.

use super::error::ApiError;
use crate::sale::lottery::MAX_OVERBOOKING_PERCENT;
use crate::sale::model::Admission;
use crate::sale::waiting_room::{
    DEFAULT_ADMISSION_RATE, DEFAULT_QUEUE_LEAD_MS, MAX_ADMISSION_RATE,
};

/// Latest time a sale may start or end (see `sales::MAX_TIME_MS`).
const MAX_TIME_MS: u64 = super::sales::MAX_TIME_MS;

/// A sale's admission mode and the settings that go with it, as a `PUT` body gives them.
#[derive(Debug, Default)]
pub(super) struct AdmissionFields {
    admission: Option<String>,
    queue_opens_at: Option<u64>,
    admission_rate: Option<u64>,
    register_from: Option<u64>,
    overbooking_percent: Option<u64>,
}

/// The admission settings of a sale, defaulted and checked against each other and the mode.
#[derive(Debug, Clone, Copy)]
pub(super) struct AdmissionSettings {
    pub(super) admission: Admission,
    pub(super) queue_opens_at: u64,
    pub(super) admission_rate: u32,
    pub(super) register_from: u64,
    pub(super) overbooking_percent: u32,
}

impl AdmissionFields {
    /// Reads the admission fields from a sale body, each checked against its own range.
    pub(super) fn read(fields: &mut super::body::Fields) -> Result<Self, ApiError> {
        Ok(Self {
            admission: fields.str("admission", 1..=32)?,
            queue_opens_at: fields.u64("queue_opens_at", 0..=MAX_TIME_MS)?,
            admission_rate: fields.u64("admission_rate", 1..=u64::from(MAX_ADMISSION_RATE))?,
            register_from: fields.u64("register_from", 0..=MAX_TIME_MS)?,
            overbooking_percent: fields.u64(
                "overbooking_percent",
                100..=u64::from(MAX_OVERBOOKING_PERCENT),
            )?,
        })
    }

    /// The settings of the chosen mode, defaulted, after refusing the fields of another mode and
    /// an opening after `starts_at`.
    pub(super) fn settle(self, starts_at: u64) -> Result<AdmissionSettings, ApiError> {
        let admission = match self.admission.as_deref() {
            None | Some("fcfs") => Admission::Fcfs,
            Some("waiting_room") => Admission::WaitingRoom,
            Some("lottery") => Admission::Lottery,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "field `admission` must be `fcfs`, `waiting_room` or `lottery`",
                ))
            }
        };
        let (room, lottery) = (
            self.queue_opens_at.is_some() || self.admission_rate.is_some(),
            self.register_from.is_some() || self.overbooking_percent.is_some(),
        );
        if room && admission != Admission::WaitingRoom {
            return Err(ApiError::bad_request(
                "fields `queue_opens_at` and `admission_rate` need `\"admission\": \"waiting_room\"`",
            ));
        }
        if lottery && admission != Admission::Lottery {
            return Err(ApiError::bad_request(
                "fields `register_from` and `overbooking_percent` need `\"admission\": \"lottery\"`",
            ));
        }
        let mut settings = AdmissionSettings {
            admission,
            queue_opens_at: 0,
            admission_rate: 0,
            register_from: 0,
            overbooking_percent: 0,
        };
        let opens = |given: Option<u64>, name: &str| {
            let at = given.unwrap_or_else(|| starts_at.saturating_sub(DEFAULT_QUEUE_LEAD_MS));
            if at > starts_at {
                return Err(ApiError::bad_request(format!(
                    "field `{name}` must not be after `starts_at`"
                )));
            }
            Ok(at)
        };
        match admission {
            Admission::Fcfs => {}
            Admission::WaitingRoom => {
                settings.queue_opens_at = opens(self.queue_opens_at, "queue_opens_at")?;
                // Bounded by the range checked when it was read.
                settings.admission_rate =
                    self.admission_rate.map_or(DEFAULT_ADMISSION_RATE, |rate| {
                        u32::try_from(rate).unwrap_or(MAX_ADMISSION_RATE)
                    });
            }
            Admission::Lottery => {
                settings.register_from = opens(self.register_from, "register_from")?;
                // Bounded by the range checked when it was read.
                settings.overbooking_percent = self.overbooking_percent.map_or(100, |percent| {
                    u32::try_from(percent).unwrap_or(MAX_OVERBOOKING_PERCENT)
                });
            }
        }
        Ok(settings)
    }
}
