//! The `plc` trigger: a handshake with the line PLC over Modbus TCP, in coils of the PLC
//! (the agent is the Modbus client). The agent polls the trigger coil; on its rising edge it
//! raises Busy (and lowers Ready and Error), captures, writes the result (Error raised when
//! nothing was captured), lowers Busy and raises Ready: Busy → result → Ready, in that order.
//! The next part is the trigger coil's next rising edge (the PLC lowers it once it saw Ready).
//!
//! The result, when the OK and NG coils are mapped: a captured part's edge verdict (edge
//! analysis judges each frame before it is buffered) raises OK or NG. A part captured but not
//! judged (edge analysis off, or no model for its SKU yet) raises neither, and Error stays low:
//! "captured", its verdict left to the cloud. All result coils are lowered with Ready when the
//! next part starts.
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
use crate::sync::Backoff;

/// Where the handshake lives in the PLC.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub address: SocketAddr,
    pub unit_id: u8,
    pub poll_interval: Duration,
    pub trigger_coil: u16,
    pub busy_coil: u16,
    pub ready_coil: u16,
    pub error_coil: u16,
    /// Raised when the part's edge verdict is OK.
    pub ok_coil: Option<u16>,
    /// Raised when the part's edge verdict is NG.
    pub ng_coil: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
enum PlcError {
    #[error("connecting to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("Modbus: {0}")]
    Modbus(#[from] tokio_modbus::Error),
    #[error("the PLC refused the request: {0}")]
    Exception(#[from] tokio_modbus::ExceptionCode),
    #[error("the PLC answered no coil")]
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

/// One connection: polls the trigger coil and runs a handshake per rising edge, until an error.
async fn serve(station: &Station, plc: &Handshake, backoff: &mut Backoff) -> Result<(), PlcError> {
    let mut modbus = tcp::connect_slave(plc.address, Slave(plc.unit_id))
        .await
        .map_err(|e| PlcError::Connect(plc.address, e))?;
    info!(camera = station.camera(), plc = %plc.address, "PLC connected");
    backoff.reset();
    // A trigger already high when the agent connects is not a new part.
    let mut was_high = read_trigger(&mut modbus, plc).await?;
    let mut ticker = tokio::time::interval(plc.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let high = read_trigger(&mut modbus, plc).await?;
        if high && !was_high {
            handshake(station, plc, &mut modbus).await?;
        }
        was_high = high;
    }
}

async fn read_trigger(modbus: &mut Modbus, plc: &Handshake) -> Result<bool, PlcError> {
    let coils = modbus.read_coils(plc.trigger_coil, 1).await??;
    coils.first().copied().ok_or(PlcError::Empty)
}

async fn write(modbus: &mut Modbus, coil: u16, on: bool) -> Result<(), PlcError> {
    modbus.write_single_coil(coil, on).await??;
    Ok(())
}

/// Busy → capture → result → Ready.
async fn handshake(
    station: &Station,
    plc: &Handshake,
    modbus: &mut Modbus,
) -> Result<(), PlcError> {
    write(modbus, plc.busy_coil, true).await?;
    write(modbus, plc.ready_coil, false).await?;
    write(modbus, plc.error_coil, false).await?;
    for coil in [plc.ok_coil, plc.ng_coil].into_iter().flatten() {
        write(modbus, coil, false).await?;
    }
    let (tx, rx) = oneshot::channel();
    station.fire(Trigger::new("plc", TriggerRequest::default(), Some(tx)));
    let ack = match tokio::time::timeout(ANSWER_DEADLINE, rx).await {
        Ok(Ok(ack)) if ack.outcome == TriggerOutcome::Captured => Some(ack),
        _ => None,
    };
    write(modbus, plc.error_coil, ack.is_none()).await?;
    let result = match ack.and_then(|a| a.defect_detected) {
        Some(false) => plc.ok_coil,
        Some(true) => plc.ng_coil,
        None => None,
    };
    if let Some(coil) = result {
        write(modbus, coil, true).await?;
    }
    write(modbus, plc.busy_coil, false).await?;
    write(modbus, plc.ready_coil, true).await?;
    Ok(())
}

#[cfg(test)]
mod tests;
