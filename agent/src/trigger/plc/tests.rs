//! The handshake against a PLC played by tokio-modbus's own TCP server, in process: its coils
//! and holding registers in memory, every write logged in order.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::sync::Mutex;

use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response};
use wiko_wire::CameraStatus;

use super::*;
use crate::source::health::Monitor;

const TRIGGER: u16 = 0;
const BUSY: u16 = 1;
const READY: u16 = 2;
const ERROR: u16 = 3;
const OK: u16 = 4;
const NG: u16 = 5;
/// Holding registers (register mode).
const TRIGGER_REGISTER: u16 = 0;
const STATUS_REGISTER: u16 = 1;

#[derive(Clone, Default)]
struct Plc {
    coils: Arc<Mutex<[bool; 8]>>,
    registers: Arc<Mutex<[u16; 8]>>,
    /// The agent's coil writes, in order.
    writes: Arc<Mutex<Vec<(u16, bool)>>>,
    /// The agent's register writes, in order.
    register_writes: Arc<Mutex<Vec<(u16, u16)>>>,
}

impl tokio_modbus::server::Service for Plc {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Request<'static>) -> Self::Future {
        let mut coils = self.coils.lock().unwrap();
        std::future::ready(match req {
            Request::ReadCoils(addr, n) => {
                let (a, n) = (addr as usize, n as usize);
                coils
                    .get(a..a + n)
                    .map(|c| Response::ReadCoils(c.to_vec()))
                    .ok_or(ExceptionCode::IllegalDataAddress)
            }
            Request::WriteSingleCoil(addr, on) => match coils.get_mut(addr as usize) {
                Some(coil) => {
                    *coil = on;
                    self.writes.lock().unwrap().push((addr, on));
                    Ok(Response::WriteSingleCoil(addr, on))
                }
                None => Err(ExceptionCode::IllegalDataAddress),
            },
            Request::ReadHoldingRegisters(addr, n) => {
                let (a, n) = (addr as usize, n as usize);
                self.registers
                    .lock()
                    .unwrap()
                    .get(a..a + n)
                    .map(|r| Response::ReadHoldingRegisters(r.to_vec()))
                    .ok_or(ExceptionCode::IllegalDataAddress)
            }
            Request::WriteSingleRegister(addr, value) => {
                match self.registers.lock().unwrap().get_mut(addr as usize) {
                    Some(register) => {
                        *register = value;
                        self.register_writes.lock().unwrap().push((addr, value));
                        Ok(Response::WriteSingleRegister(addr, value))
                    }
                    None => Err(ExceptionCode::IllegalDataAddress),
                }
            }
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

impl Plc {
    fn set_trigger(&self, on: bool) {
        self.coils.lock().unwrap()[TRIGGER as usize] = on;
    }

    fn coil(&self, coil: u16) -> bool {
        self.coils.lock().unwrap()[coil as usize]
    }

    /// The PLC's program sets the trigger register: a part number, or zero.
    fn set_trigger_register(&self, value: u16) {
        self.registers.lock().unwrap()[TRIGGER_REGISTER as usize] = value;
    }

    fn register(&self, register: u16) -> u16 {
        self.registers.lock().unwrap()[register as usize]
    }

    fn take_register_writes(&self) -> Vec<(u16, u16)> {
        std::mem::take(&mut *self.register_writes.lock().unwrap())
    }

    fn last_write(&self) -> Option<(u16, bool)> {
        self.writes.lock().unwrap().last().copied()
    }

    fn take_writes(&self) -> Vec<(u16, bool)> {
        std::mem::take(&mut *self.writes.lock().unwrap())
    }

    async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let plc = self.clone();
        tokio::spawn(async move {
            let server = Server::new(listener);
            let on_connected = |stream, socket_addr| {
                let plc = plc.clone();
                async move { accept_tcp_connection(stream, socket_addr, move |_| Ok(Some(plc.clone()))) }
            };
            let _ = server.serve(&on_connected, |_| {}).await;
        });
        address
    }
}

async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} never happened");
}

/// A station whose camera answers each trigger with `outcome`.
fn station(outcome: TriggerOutcome) -> (Arc<Station>, Arc<Monitor>, impl Future<Output = ()>) {
    judged_station(outcome, Vec::new())
}

/// A station whose camera answers each trigger with `outcome`, a captured frame judged with
/// the next of `verdicts` (true: NG; unjudged once they run out).
fn judged_station(
    outcome: TriggerOutcome,
    verdicts: Vec<bool>,
) -> (Arc<Station>, Arc<Monitor>, impl Future<Output = ()>) {
    let monitor = Arc::new(Monitor::new("c1", "synthetic"));
    monitor.set_status(CameraStatus::Ok);
    let (station, mut rx) = Station::new(monitor.clone());
    let camera = {
        let station = station.clone();
        async move {
            let mut verdicts = verdicts.into_iter();
            while let Some(trigger) = rx.recv().await {
                if outcome == TriggerOutcome::Captured {
                    station.captured(trigger, uuid::Uuid::now_v7(), verdicts.next());
                } else {
                    station.finish(trigger, outcome, None, None);
                }
            }
        }
    };
    (station, monitor, camera)
}

fn handshake_at(address: SocketAddr) -> Handshake {
    in_coils(address, None, None)
}

fn in_coils(address: SocketAddr, ok: Option<u16>, ng: Option<u16>) -> Handshake {
    Handshake {
        address,
        unit_id: 1,
        poll_interval: Duration::from_millis(10),
        signals: Signals::Coils {
            trigger: TRIGGER,
            busy: BUSY,
            ready: READY,
            error: ERROR,
            ok,
            ng,
        },
    }
}

fn in_registers(address: SocketAddr) -> Handshake {
    Handshake {
        signals: Signals::Registers {
            trigger: TRIGGER_REGISTER,
            status: STATUS_REGISTER,
        },
        ..handshake_at(address)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_verdict_raises_ok_or_ng_between_busy_and_ready() {
    // See: issue #20 (PLC result registers).
    let plc = Plc::default();
    let address = plc.serve().await;
    let (station, _monitor, camera) = judged_station(TriggerOutcome::Captured, vec![false, true]);
    tokio::spawn(camera);
    let stop = CancellationToken::new();
    tokio::spawn(run(
        station,
        in_coils(address, Some(OK), Some(NG)),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = [
        (BUSY, true),
        (READY, false),
        (ERROR, false),
        (OK, false),
        (NG, false),
    ];
    // OK, then NG, then a part captured but not judged: neither.
    for result in [Some(OK), Some(NG), None] {
        plc.set_trigger(true);
        until("Ready", || plc.last_write() == Some((READY, true))).await;
        let mut expected = start.to_vec();
        expected.push((ERROR, false));
        expected.extend(result.map(|coil| (coil, true)));
        expected.extend([(BUSY, false), (READY, true)]);
        assert_eq!(plc.take_writes(), expected, "result {result:?}");
        assert_eq!(plc.coil(OK), result == Some(OK));
        assert_eq!(plc.coil(NG), result == Some(NG));
        plc.set_trigger(false);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rising_edge_is_one_part_answered_busy_then_result_then_ready() {
    let plc = Plc::default();
    let address = plc.serve().await;
    let (station, _monitor, camera) = station(TriggerOutcome::Captured);
    tokio::spawn(camera);
    let stop = CancellationToken::new();
    tokio::spawn(run(station.clone(), handshake_at(address), stop.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(plc.take_writes().is_empty(), "nothing before a trigger");

    for _ in 0..2 {
        plc.set_trigger(true);
        until("Ready", || plc.last_write() == Some((READY, true))).await;
        assert_eq!(
            plc.take_writes(),
            [
                (BUSY, true),
                (READY, false),
                (ERROR, false),
                (ERROR, false),
                (BUSY, false),
                (READY, true)
            ]
        );
        // Still high: no second part until the PLC lowers the trigger and raises it again.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(plc.take_writes().is_empty());
        plc.set_trigger(false);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_the_camera_could_not_take_raises_error_before_ready() {
    let plc = Plc::default();
    let address = plc.serve().await;
    let (station, _monitor, camera) = station(TriggerOutcome::CameraFailed);
    tokio::spawn(camera);
    let stop = CancellationToken::new();
    tokio::spawn(run(station, handshake_at(address), stop.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    plc.set_trigger(true);
    until("Ready", || plc.coil(READY)).await;
    let writes = plc.take_writes();
    assert_eq!(&writes[3..], [(ERROR, true), (BUSY, false), (READY, true)]);
    assert!(plc.coil(ERROR));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_high_before_the_agent_connects_is_not_a_part() {
    let plc = Plc::default();
    plc.set_trigger(true);
    let address = plc.serve().await;
    let (station, monitor, camera) = station(TriggerOutcome::Captured);
    tokio::spawn(camera);
    let stop = CancellationToken::new();
    tokio::spawn(run(station, handshake_at(address), stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(plc.take_writes().is_empty());
    assert_eq!(monitor.snapshot().triggers_missed_total, 0);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_registers_the_status_word_goes_busy_then_busy_with_the_result_then_ready_with_it() {
    // See: issue #20 (the handshake and the result in holding registers).
    let plc = Plc::default();
    let address = plc.serve().await;
    let (station, _monitor, camera) = judged_station(TriggerOutcome::Captured, vec![false, true]);
    tokio::spawn(camera);
    let stop = CancellationToken::new();
    tokio::spawn(run(station, in_registers(address), stop.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        plc.take_register_writes().is_empty(),
        "nothing before a trigger"
    );
    // OK, then NG, then a part captured but not judged; the PLC numbers its parts.
    for (part, result) in [(7, status::OK), (8, status::NG), (9, 0)] {
        plc.set_trigger_register(part);
        // Each part's Ready word differs from the last part's, which stays until Busy.
        until("Ready", || {
            plc.register(STATUS_REGISTER) == status::READY | result
        })
        .await;
        assert_eq!(
            plc.take_register_writes(),
            [
                (STATUS_REGISTER, status::BUSY),
                (STATUS_REGISTER, status::BUSY | result),
                (STATUS_REGISTER, status::READY | result),
            ],
            "part {part}"
        );
        // Still set: no second part until the PLC clears the register and sets it again.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(plc.take_register_writes().is_empty());
        assert!(plc.take_writes().is_empty(), "no coil is written");
        plc.set_trigger_register(0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_registers_a_part_the_camera_could_not_take_is_error_with_ready() {
    let plc = Plc::default();
    let address = plc.serve().await;
    let (station, _monitor, camera) = station(TriggerOutcome::CameraFailed);
    tokio::spawn(camera);
    let stop = CancellationToken::new();
    tokio::spawn(run(station, in_registers(address), stop.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    plc.set_trigger_register(1);
    until("Ready", || {
        plc.register(STATUS_REGISTER) & status::READY != 0
    })
    .await;
    assert_eq!(
        plc.take_register_writes(),
        [
            (STATUS_REGISTER, status::BUSY),
            (STATUS_REGISTER, status::BUSY | status::ERROR),
            (STATUS_REGISTER, status::READY | status::ERROR),
        ]
    );
    stop.cancel();
}
