//! The `plc` trigger: a handshake with the line PLC over Modbus TCP (the agent is the Modbus
//! client), in coils or in holding registers, as the PLC's program expects.
//!
//! Coils: the agent polls the trigger coil; on its rising edge it raises Busy (and lowers
//! Ready, Error, OK and NG), captures, writes the result (Error raised when nothing was
//! captured; OK or NG from the edge verdict, when those coils are mapped), lowers Busy and
//! raises Ready: Busy → result → Ready, in that order. The next part is the trigger coil's
//! next rising edge (the PLC lowers it once it saw Ready).
//!
//! Registers: the agent polls the trigger register; a part is each new value other than zero
//! (from zero, or from another part's value), and that value is the part's `part_id`, so the
//! PLC numbers its parts. The agent writes a status word into the status register, three
//! times per part in this order: Busy; Busy with the result; Ready with the result
//! ([`status`] lists the bits). When the trigger register goes back to zero the status word
//! is cleared (0, idle), so the PLC never reads a part's result as the next one's.
//!
//! The result: a captured part's edge verdict (edge analysis judges each frame before it is
//! buffered) is OK or NG. A part captured but not judged (edge analysis off, or no model for
//! its SKU yet) is neither, and Error stays low: "captured", its verdict left to the cloud.
//!
//! The link: every request (and the connection itself) has a deadline (`request_timeout_ms`;
//! tokio-modbus has none), and any failure (a deadline missed, the connection lost, the PLC
//! refusing a request with a Modbus exception) drops the connection and connects again after
//! a backoff that grows until a new connection has read the PLC and answered what it found.
//! On each connection the agent first settles what the PLC waits for, with what it remembers
//! across connections (the last part it took: the trigger's value and how the part ended):
//! a trigger still at the value of a part the agent took gets that part's real result again
//! (Ready with it: the link dropped while the result or Ready was written, the frame is
//! stored); a trigger set without its Ready (a part the agent was starting when the link
//! dropped, or one set while it was away) is a part the PLC still waits on. It is answered
//! like a part nothing was captured for (Busy → Error → Ready; counted as missed, reason
//! `interrupted`): an Error costs the line a part checked again by hand, the picture of
//! another part could pass a bad one. With `take_pending_within_ms` set (the default, 0,
//! never) it is taken instead (Busy → capture → result → Ready) when the agent read the PLC
//! at most that long before. That holds only on a line that keeps the part at the camera
//! until its Ready (an indexed line; on a moving conveyor a late capture is a picture of
//! another part), with the key below the PLC's own Busy watchdog; a trigger left longer (its
//! PLC may have given the part up without clearing it), or found on the first connection
//! after the agent started (it knows nothing of how long it was there), is answered Error
//! all the same. An idle PLC gets the idle
//! status (Busy and Ready lowered; in registers the status word 0). A trigger whose Ready is
//! given is not a part: in coils the agent lowers Ready when the trigger falls, so a trigger
//! high with Ready high is a part answered and not yet lowered (a PLC that raises the next
//! trigger while the link is down and before Ready falls is not told apart); in registers the
//! READY bit is trusted only for the value the agent answered, or on the first connection
//! after the agent started (it remembers nothing older): READY with another value is the
//! previous part's, and the new value is a part the PLC still waits on (answered Error, or
//! taken within `take_pending_within_ms`, as above).
//! A new trigger seen while the station is busy is answered like any trigger (counted as
//! missed, Error raised).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_modbus::client::{Context as Modbus, Reader, Writer, tcp};
use tokio_modbus::slave::Slave;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};
use wiko_wire::{TriggerOutcome, TriggerRequest};

use super::{ANSWER_DEADLINE, Station, Trigger};
use crate::config::TriggerConfig;
use crate::source::health::Missed;
use crate::sync::Backoff;
use crate::telemetry as names;

/// The first and the longest wait before connecting to the PLC again.
const RECONNECT_INITIAL: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// The bits of the status word the agent writes in register mode.
pub mod status {
    /// Nothing in progress, no result: the trigger register is zero.
    pub const IDLE: u16 = 0;
    /// The agent is taking the part.
    pub const BUSY: u16 = 1;
    /// The part is done (captured or not); the PLC may clear the trigger.
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
    /// Deadline of connecting and of each Modbus request.
    pub request_timeout: Duration,
    /// How long after the PLC was last read a part it set while the link was down is still
    /// taken on reconnect (zero: never, answered Error).
    pub take_pending_within: Duration,
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
        /// Read: a part at each new value other than zero, which is its `part_id`.
        trigger: u16,
        /// Written: the [`status`] word.
        status: u16,
    },
}

/// One of the PLC's data tables (Modbus addresses each apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Table {
    Coil,
    HoldingRegister,
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Table::Coil => "coil",
            Table::HoldingRegister => "holding register",
        })
    }
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

const COIL_KEYS: &str = "trigger_coil, busy_coil, ready_coil, error_coil";
const REGISTER_KEYS: &str = "trigger_register, status_register";

impl Handshake {
    /// The handshake a `plc` trigger configures (`None` for another kind of trigger), or the
    /// key at fault and why: the coil keys or the register keys, never both. That no two
    /// keys map one coil or register is [`overlapping`]'s check, across cameras.
    pub fn from_config(
        trigger: &TriggerConfig,
    ) -> Option<Result<Handshake, (&'static str, String)>> {
        let TriggerConfig::Plc {
            address,
            unit_id,
            poll_interval_ms,
            request_timeout_ms,
            take_pending_within_ms,
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
            if *request_timeout_ms == 0 {
                return Err(("request_timeout_ms", "must be above zero".into()));
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
            let set = |keys: &[(&'static str, Option<u16>)]| {
                keys.iter().find(|(_, a)| a.is_some()).map(|(k, _)| *k)
            };
            let required = |key: &'static str, address: &Option<u16>| {
                address.ok_or((key, "missing".to_string()))
            };
            match (set(&coils), set(&registers)) {
                (Some(coil), Some(register)) => Err((
                    register,
                    format!(
                        "the handshake is in coils ({COIL_KEYS}) or in holding registers ({REGISTER_KEYS}), not both: {coil} and {register} are set"
                    ),
                )),
                (None, None) => Err((
                    "trigger_coil",
                    format!(
                        "missing: map the handshake in coils ({COIL_KEYS}) or in holding registers ({REGISTER_KEYS})"
                    ),
                )),
                (Some(_), None) => Ok(Signals::Coils {
                    trigger: required("trigger_coil", trigger_coil)?,
                    busy: required("busy_coil", busy_coil)?,
                    ready: required("ready_coil", ready_coil)?,
                    error: required("error_coil", error_coil)?,
                    ok: *ok_coil,
                    ng: *ng_coil,
                }),
                (None, Some(_)) => Ok(Signals::Registers {
                    trigger: required("trigger_register", trigger_register)?,
                    status: required("status_register", status_register)?,
                }),
            }
        };
        Some(signals().map(|signals| Handshake {
            address: *address,
            unit_id: *unit_id,
            poll_interval: Duration::from_millis(*poll_interval_ms),
            request_timeout: Duration::from_millis(*request_timeout_ms),
            take_pending_within: Duration::from_millis(*take_pending_within_ms),
            signals,
        }))
    }

    /// Every coil and register the handshake maps, with its key.
    fn mapped(&self) -> Vec<(&'static str, Table, u16)> {
        match self.signals {
            Signals::Coils {
                trigger,
                busy,
                ready,
                error,
                ok,
                ng,
            } => [
                ("trigger_coil", Some(trigger)),
                ("busy_coil", Some(busy)),
                ("ready_coil", Some(ready)),
                ("error_coil", Some(error)),
                ("ok_coil", ok),
                ("ng_coil", ng),
            ]
            .into_iter()
            .filter_map(|(key, coil)| Some((key, Table::Coil, coil?)))
            .collect(),
            Signals::Registers { trigger, status } => vec![
                ("trigger_register", Table::HoldingRegister, trigger),
                ("status_register", Table::HoldingRegister, status),
            ],
        }
    }
}

/// Refuses two keys on one coil or one holding register of one PLC (its address and unit id):
/// two cameras' handshakes, or two roles in one camera's, would read and write each other's
/// signals. `handshakes`: each one's key prefix (e.g. `camera[0].trigger`). The error names
/// the later key, and why (the earlier key).
pub fn overlapping<'a>(
    handshakes: impl IntoIterator<Item = (String, &'a Handshake)>,
) -> Result<(), (String, String)> {
    let mut taken: HashMap<(SocketAddr, u8, Table, u16), String> = HashMap::new();
    for (prefix, plc) in handshakes {
        for (key, table, number) in plc.mapped() {
            let key = format!("{prefix}.{key}");
            let at = (plc.address, plc.unit_id, table, number);
            if let Some(other) = taken.get(&at) {
                return Err((
                    key,
                    format!(
                        "must differ from {other}: both map {table} {number} of the PLC at {} unit {}",
                        plc.address, plc.unit_id
                    ),
                ));
            }
            taken.insert(at, key);
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum PlcError {
    #[error("connecting to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("Modbus: {0}")]
    Modbus(#[from] tokio_modbus::Error),
    #[error("the PLC refused the request: {0}")]
    Exception(#[from] tokio_modbus::ExceptionCode),
    #[error("the PLC answered no value")]
    Empty,
}

impl PlcError {
    /// The `error` label of the PLC error counter.
    fn label(&self) -> &'static str {
        match self {
            PlcError::Connect(..) => "connect",
            PlcError::Timeout(_) => "timeout",
            PlcError::Modbus(_) | PlcError::Empty => "transport",
            PlcError::Exception(_) => "exception",
        }
    }
}

/// Serves the handshake until `shutdown`, reconnecting with backoff.
pub async fn run(station: Arc<Station>, plc: Handshake, shutdown: CancellationToken) {
    let span = info_span!("plc", camera = station.camera(), plc = %plc.address);
    async move {
        let camera = station.camera().to_string();
        let mut backoff = Backoff::new(RECONNECT_INITIAL, RECONNECT_MAX);
        let mut memory = Memory::default();
        loop {
            let served = tokio::select! {
                _ = shutdown.cancelled() => break,
                served = serve(&station, &plc, &mut backoff, &mut memory) => served,
            };
            metrics::gauge!(names::PLC_CONNECTED, "camera" => camera.clone()).set(0.0);
            if let Err(e) = served {
                metrics::counter!(names::PLC_ERRORS_TOTAL, "camera" => camera.clone(), "error" => e.label())
                    .increment(1);
                let wait = backoff.fail(None, &mut rand::rng());
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "PLC handshake failed; connecting again");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        metrics::gauge!(names::PLC_CONNECTED, "camera" => camera).set(0.0);
    }
    .instrument(span)
    .await
}

/// What the handshake knows across connections.
#[derive(Debug, Default)]
struct Memory {
    /// A connection has settled since the agent started: the PLC's Ready is no longer
    /// trusted blindly (registers).
    settled: bool,
    /// The last part taken (its trigger value) and how it ended, kept until the trigger
    /// changes: its result is what the PLC is told again after a reconnect.
    taken: Option<(u16, Part)>,
    /// When the trigger was last read: a trigger found set on reconnect was set since.
    read_at: Option<Instant>,
}

/// One connection: settles what the PLC waits for, then polls the trigger and runs a
/// handshake per part, until an error. The backoff is reset once the connection has read the
/// PLC and answered it.
async fn serve(
    station: &Station,
    plc: &Handshake,
    backoff: &mut Backoff,
    memory: &mut Memory,
) -> Result<(), PlcError> {
    let modbus = tokio::time::timeout(
        plc.request_timeout,
        tcp::connect_slave(plc.address, Slave(plc.unit_id)),
    )
    .await
    .map_err(|_| PlcError::Timeout(plc.request_timeout))?
    .map_err(|e| PlcError::Connect(plc.address, e))?;
    let mut link = Link {
        modbus,
        timeout: plc.request_timeout,
    };
    let mut last = plc
        .signals
        .settle(station, plc.take_pending_within, &mut link, memory)
        .await?;
    memory.settled = true;
    memory.read_at = Some(Instant::now());
    backoff.reset();
    metrics::gauge!(names::PLC_CONNECTED, "camera" => station.camera().to_string()).set(1.0);
    info!("PLC connected");
    let mut ticker = tokio::time::interval(plc.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let value = plc.signals.trigger(&mut link).await?;
        memory.read_at = Some(Instant::now());
        if value != last {
            memory.taken = None;
            if value == 0 {
                plc.signals.idle(&mut link).await?;
            } else {
                handshake(station, &plc.signals, &mut link, value, memory).await?;
            }
        }
        last = value;
    }
}

/// A connection to the PLC whose every request has a deadline.
struct Link {
    modbus: Modbus,
    timeout: Duration,
}

/// `request`'s answer within `timeout`: a Modbus exception or a transport error is an error.
async fn within<T>(
    timeout: Duration,
    request: impl Future<Output = tokio_modbus::Result<T>>,
) -> Result<T, PlcError> {
    Ok(tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| PlcError::Timeout(timeout))???)
}

impl Link {
    async fn read_coil(&mut self, coil: u16) -> Result<bool, PlcError> {
        let coils = within(self.timeout, self.modbus.read_coils(coil, 1)).await?;
        coils.first().copied().ok_or(PlcError::Empty)
    }

    async fn read_register(&mut self, register: u16) -> Result<u16, PlcError> {
        let words = within(
            self.timeout,
            self.modbus.read_holding_registers(register, 1),
        )
        .await?;
        words.first().copied().ok_or(PlcError::Empty)
    }

    async fn coil(&mut self, coil: u16, on: bool) -> Result<(), PlcError> {
        within(self.timeout, self.modbus.write_single_coil(coil, on)).await
    }

    async fn register(&mut self, register: u16, value: u16) -> Result<(), PlcError> {
        within(
            self.timeout,
            self.modbus.write_single_register(register, value),
        )
        .await
    }
}

impl Signals {
    /// The trigger's value: the coil's (0 or 1), or the register's.
    async fn trigger(&self, link: &mut Link) -> Result<u16, PlcError> {
        match *self {
            Signals::Coils { trigger, .. } => Ok(u16::from(link.read_coil(trigger).await?)),
            Signals::Registers { trigger, .. } => link.read_register(trigger).await,
        }
    }

    /// The part id a trigger value carries: the register's value; none in coils.
    fn part_id(&self, value: u16) -> Option<String> {
        match self {
            Signals::Coils { .. } => None,
            Signals::Registers { .. } => Some(value.to_string()),
        }
    }

    /// On a new connection: tells the PLC the result of the part the agent took when the
    /// trigger still carries it (`memory`); takes a part the PLC set and still waits on (its
    /// Ready not given, or in registers READY left from another part) when the PLC was read
    /// within `take_pending_within`, else answers it as a part nothing was captured for;
    /// writes the idle status when the trigger is clear. Returns the trigger's value, which
    /// is no new part.
    async fn settle(
        &self,
        station: &Station,
        take_pending_within: Duration,
        link: &mut Link,
        memory: &mut Memory,
    ) -> Result<u16, PlcError> {
        let value = self.trigger(link).await?;
        if value == 0 {
            memory.taken = None;
            match *self {
                Signals::Coils { busy, .. } => link.coil(busy, false).await?,
                Signals::Registers { .. } => {}
            }
            self.idle(link).await?;
            return Ok(value);
        }
        let taken = memory
            .taken
            .filter(|(v, _)| *v == value)
            .map(|(_, part)| part);
        let answered = match *self {
            Signals::Coils { ready, .. } => link.read_coil(ready).await?,
            Signals::Registers { status, .. } => {
                let word = link.read_register(status).await?;
                match taken {
                    Some(part) => word == status::READY | part.bits(),
                    None => !memory.settled && word & status::READY != 0,
                }
            }
        };
        if answered {
            return Ok(value);
        }
        if let Some(part) = taken {
            info!(
                trigger = value,
                "the PLC waits on the part taken before the link dropped: its result written again"
            );
            if matches!(self, Signals::Coils { .. }) {
                self.result(link, part).await?;
            }
            self.ready(link, part).await?;
            return Ok(value);
        }
        let away = memory.read_at.map(|at| at.elapsed());
        if !take_pending_within.is_zero() && away.is_some_and(|away| away <= take_pending_within) {
            info!(
                trigger = value,
                away_ms = away.map_or(0, |a| a.as_millis() as u64),
                "the PLC set a part while the link was down and still waits on it: taken now"
            );
            handshake(station, self, link, value, memory).await?;
            return Ok(value);
        }
        let why = if away.is_none() {
            "found on the first connection since the agent started"
        } else if take_pending_within.is_zero() {
            "set while the link was down (take_pending_within_ms is 0: never taken)"
        } else {
            "set while the link was down longer than take_pending_within_ms"
        };
        warn!(
            trigger = value,
            away_ms = away.map(|a| a.as_millis() as u64),
            "the PLC waits on a part the agent did not take, {why}: answered Error"
        );
        station.missed(Missed::Interrupted);
        memory.taken = Some((value, Part::Failed));
        self.busy(link).await?;
        self.result(link, Part::Failed).await?;
        self.ready(link, Part::Failed).await?;
        Ok(value)
    }

    /// The trigger went back to zero: in registers, the status word is cleared (the last
    /// part's result with it); in coils, Ready is lowered (a trigger high with Ready high is
    /// then always a part answered), the result stays until the next part's Busy.
    async fn idle(&self, link: &mut Link) -> Result<(), PlcError> {
        match *self {
            Signals::Coils { ready, .. } => link.coil(ready, false).await,
            Signals::Registers { status, .. } => link.register(status, status::IDLE).await,
        }
    }

    /// A part starts: Busy, and last part's Ready and result cleared.
    async fn busy(&self, link: &mut Link) -> Result<(), PlcError> {
        match *self {
            Signals::Coils {
                busy,
                ready,
                error,
                ok,
                ng,
                ..
            } => {
                link.coil(busy, true).await?;
                link.coil(ready, false).await?;
                link.coil(error, false).await?;
                for c in [ok, ng].into_iter().flatten() {
                    link.coil(c, false).await?;
                }
                Ok(())
            }
            Signals::Registers { status, .. } => link.register(status, status::BUSY).await,
        }
    }

    /// The part's result, Busy still raised.
    async fn result(&self, link: &mut Link, part: Part) -> Result<(), PlcError> {
        match *self {
            Signals::Coils { error, ok, ng, .. } => {
                link.coil(error, part == Part::Failed).await?;
                let raised = match part {
                    Part::Ok => ok,
                    Part::Ng => ng,
                    Part::Failed | Part::Captured => None,
                };
                if let Some(c) = raised {
                    link.coil(c, true).await?;
                }
                Ok(())
            }
            Signals::Registers { status, .. } => {
                link.register(status, status::BUSY | part.bits()).await
            }
        }
    }

    /// The part is done: Busy lowered, Ready raised, the result kept.
    async fn ready(&self, link: &mut Link, part: Part) -> Result<(), PlcError> {
        match *self {
            Signals::Coils { busy, ready, .. } => {
                link.coil(busy, false).await?;
                link.coil(ready, true).await
            }
            Signals::Registers { status, .. } => {
                link.register(status, status::READY | part.bits()).await
            }
        }
    }
}

/// Busy → capture → result → Ready. The part's outcome is remembered (`memory`) as soon as it
/// is known: a reconnect tells it to the PLC if writing it fails.
async fn handshake(
    station: &Station,
    signals: &Signals,
    link: &mut Link,
    value: u16,
    memory: &mut Memory,
) -> Result<(), PlcError> {
    let part_id = signals.part_id(value);
    signals.busy(link).await?;
    let (tx, rx) = oneshot::channel();
    let request = TriggerRequest {
        part_id,
        ..TriggerRequest::default()
    };
    station.fire(Trigger::new("plc", request, Some(tx)));
    let part = match tokio::time::timeout(ANSWER_DEADLINE, rx).await {
        Ok(Ok(ack)) if ack.outcome == TriggerOutcome::Captured => match ack.defect_detected {
            Some(false) => Part::Ok,
            Some(true) => Part::Ng,
            None => Part::Captured,
        },
        _ => Part::Failed,
    };
    memory.taken = Some((value, part));
    signals.result(link, part).await?;
    signals.ready(link, part).await
}

#[cfg(test)]
mod tests;
