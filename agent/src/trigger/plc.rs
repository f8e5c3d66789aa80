//! The `plc` trigger: a handshake with the line PLC over Modbus TCP (the agent is the Modbus
//! client), in coils or in holding registers, as the PLC's program expects.
//!
//! Coils: the agent polls the trigger coil; on its rising edge it raises Busy (and lowers
//! Ready, Error, OK and NG), captures, writes the result (Error raised when nothing was
//! captured; OK or NG from the edge verdict, when those coils are mapped), lowers Busy and
//! raises Ready: Busy → result → Ready, in that order. The next part is the trigger coil's
//! next rising edge (the PLC lowers it once it saw Ready).
//!
//! Registers: the agent polls the trigger register; a part is its change from zero to any
//! other value. The agent writes a status word into the status register, three times per part
//! in this order: Busy; Busy with the result; Ready with the result ([`status`] lists the
//! bits). The result stays in the word with Ready until the next part's Busy.
//!
//! The result: a captured part's edge verdict (edge analysis judges each frame before it is
//! buffered) is OK or NG. A part captured but not judged (edge analysis off, or no model for
//! its SKU yet) is neither, and Error stays low: "captured", its verdict left to the cloud.
//!
//! A lost connection is retried with backoff; a rising edge seen while the station is busy is
//! answered like any trigger (counted as missed, Error raised).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_modbus::client::{Context as Modbus, Reader, Writer, tcp};
use tokio_modbus::slave::Slave;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wiko_wire::{TriggerOutcome, TriggerRequest};

use super::{ANSWER_DEADLINE, Station, Trigger};
use crate::config::TriggerConfig;
use crate::sync::Backoff;

/// The bits of the status word the agent writes in register mode.
pub mod status {
    /// The agent is taking the part.
    pub const BUSY: u16 = 1;
    /// The part is done (captured or not); the PLC may lower the trigger.
    pub const READY: u16 = 2;
    /// The part's edge verdict is OK.
    pub const OK: u16 = 4;
    /// The part's edge verdict is NG.
    pub const NG: u16 = 8;
    /// Nothing was captured.
    pub const ERROR: u16 = 16;
}

/// Where the handshake lives in the PLC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub address: SocketAddr,
    pub unit_id: u8,
    pub poll_interval: Duration,
    pub signals: Signals,
}

/// The PLC's side of the handshake: its coils, or two of its holding registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signals {
    Coils {
        trigger: u16,
        busy: u16,
        ready: u16,
        error: u16,
        /// Raised when the part's edge verdict is OK.
        ok: Option<u16>,
        /// Raised when the part's edge verdict is NG.
        ng: Option<u16>,
    },
    Registers {
        /// Read: a part when it turns from zero to another value.
        trigger: u16,
        /// Written: the [`status`] word.
        status: u16,
    },
}

/// How a part ended, as the PLC is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Nothing captured.
    Failed,
    /// Captured, not judged.
    Captured,
    Ok,
    Ng,
}

impl Part {
    fn bits(self) -> u16 {
        match self {
            Part::Failed => status::ERROR,
            Part::Captured => 0,
            Part::Ok => status::OK,
            Part::Ng => status::NG,
        }
    }
}

impl Handshake {
    /// The handshake a `plc` trigger configures (`None` for another kind of trigger), or the
    /// key at fault and why: the four coils, or the two registers, all different, never both.
    pub fn from_config(
        trigger: &TriggerConfig,
    ) -> Option<Result<Handshake, (&'static str, String)>> {
        let TriggerConfig::Plc {
            address,
            unit_id,
            poll_interval_ms,
            trigger_coil,
            busy_coil,
            ready_coil,
            error_coil,
            ok_coil,
            ng_coil,
            trigger_register,
            status_register,
        } = trigger
        else {
            return None;
        };
        let signals = || -> Result<Signals, (&'static str, String)> {
            if *poll_interval_ms == 0 {
                return Err(("poll_interval_ms", "must be above zero".into()));
            }
            let coils = [
                ("trigger_coil", *trigger_coil),
                ("busy_coil", *busy_coil),
                ("ready_coil", *ready_coil),
                ("error_coil", *error_coil),
                ("ok_coil", *ok_coil),
                ("ng_coil", *ng_coil),
            ];
            let registers = [
                ("trigger_register", *trigger_register),
                ("status_register", *status_register),
            ];
            let in_coils = coils.iter().any(|(_, c)| c.is_some());
            let in_registers = registers.iter().any(|(_, r)| r.is_some());
            let required = |key: &'static str, address: &Option<u16>| {
                address.ok_or((key, "missing".to_string()))
            };
            let distinct = |keys: &[(&'static str, Option<u16>)]| {
                let mapped: Vec<_> = keys.iter().filter_map(|(k, a)| Some((*k, (*a)?))).collect();
                for (i, (key, address)) in mapped.iter().enumerate() {
                    if let Some((other, _)) = mapped[..i].iter().find(|(_, a)| a == address) {
                        return Err((*key, format!("must differ from {other} (both {address})")));
                    }
                }
                Ok(())
            };
            match (in_coils, in_registers) {
                (true, true) => Err((
                    "trigger_register",
                    "the handshake is in coils or in registers, not both".into(),
                )),
                (false, false) => Err((
                    "trigger_coil",
                    "missing: map the handshake in coils (trigger_coil, busy_coil, ready_coil, error_coil) or in holding registers (trigger_register, status_register)".into(),
                )),
                (true, false) => {
                    let signals = Signals::Coils {
                        trigger: required("trigger_coil", trigger_coil)?,
                        busy: required("busy_coil", busy_coil)?,
                        ready: required("ready_coil", ready_coil)?,
                        error: required("error_coil", error_coil)?,
                        ok: *ok_coil,
                        ng: *ng_coil,
                    };
                    distinct(&coils)?;
                    Ok(signals)
                }
                (false, true) => {
                    let signals = Signals::Registers {
                        trigger: required("trigger_register", trigger_register)?,
                        status: required("status_register", status_register)?,
                    };
                    distinct(&registers)?;
                    Ok(signals)
                }
            }
        };
        Some(signals().map(|signals| Handshake {
            address: *address,
            unit_id: *unit_id,
            poll_interval: Duration::from_millis(*poll_interval_ms),
            signals,
        }))
    }
}

#[derive(Debug, thiserror::Error)]
enum PlcError {
    #[error("connecting to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("Modbus: {0}")]
    Modbus(#[from] tokio_modbus::Error),
    #[error("the PLC refused the request: {0}")]
    Exception(#[from] tokio_modbus::ExceptionCode),
    #[error("the PLC answered no value")]
    Empty,
}

/// Serves the handshake until `shutdown`, reconnecting with backoff.
pub async fn run(station: Arc<Station>, plc: Handshake, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let served = tokio::select! {
            _ = shutdown.cancelled() => return,
            served = serve(&station, &plc, &mut backoff) => served,
        };
        if let Err(e) = served {
            let wait = backoff.fail(None, &mut rand::rng());
            warn!(camera = station.camera(), plc = %plc.address, error = %e, retry_in_ms = wait.as_millis() as u64, "PLC handshake failed");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// One connection: polls the trigger and runs a handshake per rising edge, until an error.
async fn serve(station: &Station, plc: &Handshake, backoff: &mut Backoff) -> Result<(), PlcError> {
    let mut modbus = tcp::connect_slave(plc.address, Slave(plc.unit_id))
        .await
        .map_err(|e| PlcError::Connect(plc.address, e))?;
    info!(camera = station.camera(), plc = %plc.address, "PLC connected");
    backoff.reset();
    // A trigger already high when the agent connects is not a new part.
    let mut was_high = plc.signals.triggered(&mut modbus).await?;
    let mut ticker = tokio::time::interval(plc.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let high = plc.signals.triggered(&mut modbus).await?;
        if high && !was_high {
            handshake(station, &plc.signals, &mut modbus).await?;
        }
        was_high = high;
    }
}

async fn coil(modbus: &mut Modbus, coil: u16, on: bool) -> Result<(), PlcError> {
    modbus.write_single_coil(coil, on).await??;
    Ok(())
}

async fn register(modbus: &mut Modbus, register: u16, value: u16) -> Result<(), PlcError> {
    modbus.write_single_register(register, value).await??;
    Ok(())
}

impl Signals {
    /// The trigger is high: its coil raised, or its register not zero.
    async fn triggered(&self, modbus: &mut Modbus) -> Result<bool, PlcError> {
        match *self {
            Signals::Coils { trigger, .. } => {
                let coils = modbus.read_coils(trigger, 1).await??;
                coils.first().copied().ok_or(PlcError::Empty)
            }
            Signals::Registers { trigger, .. } => {
                let words = modbus.read_holding_registers(trigger, 1).await??;
                words.first().map(|w| *w != 0).ok_or(PlcError::Empty)
            }
        }
    }

    /// A part starts: Busy, and last part's Ready and result cleared.
    async fn busy(&self, modbus: &mut Modbus) -> Result<(), PlcError> {
        match *self {
            Signals::Coils {
                busy,
                ready,
                error,
                ok,
                ng,
                ..
            } => {
                coil(modbus, busy, true).await?;
                coil(modbus, ready, false).await?;
                coil(modbus, error, false).await?;
                for c in [ok, ng].into_iter().flatten() {
                    coil(modbus, c, false).await?;
                }
                Ok(())
            }
            Signals::Registers { status, .. } => register(modbus, status, status::BUSY).await,
        }
    }

    /// The part's result, Busy still raised.
    async fn result(&self, modbus: &mut Modbus, part: Part) -> Result<(), PlcError> {
        match *self {
            Signals::Coils { error, ok, ng, .. } => {
                coil(modbus, error, part == Part::Failed).await?;
                let raised = match part {
                    Part::Ok => ok,
                    Part::Ng => ng,
                    Part::Failed | Part::Captured => None,
                };
                if let Some(c) = raised {
                    coil(modbus, c, true).await?;
                }
                Ok(())
            }
            Signals::Registers { status, .. } => {
                register(modbus, status, status::BUSY | part.bits()).await
            }
        }
    }

    /// The part is done: Busy lowered, Ready raised, the result kept.
    async fn ready(&self, modbus: &mut Modbus, part: Part) -> Result<(), PlcError> {
        match *self {
            Signals::Coils { busy, ready, .. } => {
                coil(modbus, busy, false).await?;
                coil(modbus, ready, true).await
            }
            Signals::Registers { status, .. } => {
                register(modbus, status, status::READY | part.bits()).await
            }
        }
    }
}

/// Busy → capture → result → Ready.
async fn handshake(
    station: &Station,
    signals: &Signals,
    modbus: &mut Modbus,
) -> Result<(), PlcError> {
    signals.busy(modbus).await?;
    let (tx, rx) = oneshot::channel();
    station.fire(Trigger::new("plc", TriggerRequest::default(), Some(tx)));
    let part = match tokio::time::timeout(ANSWER_DEADLINE, rx).await {
        Ok(Ok(ack)) if ack.outcome == TriggerOutcome::Captured => match ack.defect_detected {
            Some(false) => Part::Ok,
            Some(true) => Part::Ng,
            None => Part::Captured,
        },
        _ => Part::Failed,
    };
    signals.result(modbus, part).await?;
    signals.ready(modbus, part).await
}

#[cfg(test)]
mod tests;
