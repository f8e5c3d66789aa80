//! The handshake against a PLC played by tokio-modbus's own TCP server, in process: its coils
//! and holding registers in memory, every write logged in order.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
    /// Requests received (answered or not).
    requests: Arc<AtomicUsize>,
    /// While set, requests are read and never answered: a PLC that hangs.
    silent: Arc<AtomicBool>,
    /// A register write read once and never answered nor applied: a write lost with its link.
    lost: Arc<Mutex<Option<(u16, u16)>>>,
    /// The same, a coil write.
    lost_coil: Arc<Mutex<Option<(u16, bool)>>>,
}

impl tokio_modbus::server::Service for Plc {
    type Request = Request<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Request<'static>) -> Self::Future {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if self.silent.load(Ordering::SeqCst) {
            return std::future::ready(Ok(None));
        }
        if let Request::WriteSingleRegister(addr, value) = req {
            let mut lost = self.lost.lock().unwrap();
            if *lost == Some((addr, value)) {
                *lost = None;
                return std::future::ready(Ok(None));
            }
        }
        if let Request::WriteSingleCoil(addr, on) = req {
            let mut lost = self.lost_coil.lock().unwrap();
            if *lost == Some((addr, on)) {
                *lost = None;
                return std::future::ready(Ok(None));
            }
        }
        let mut coils = self.coils.lock().unwrap();
        std::future::ready(match req {
            Request::ReadCoils(addr, n) => {
                let (a, n) = (addr as usize, n as usize);
                coils
                    .get(a..a + n)
                    .map(|c| Some(Response::ReadCoils(c.to_vec())))
                    .ok_or(ExceptionCode::IllegalDataAddress)
            }
            Request::WriteSingleCoil(addr, on) => match coils.get_mut(addr as usize) {
                Some(coil) => {
                    *coil = on;
                    self.writes.lock().unwrap().push((addr, on));
                    Ok(Some(Response::WriteSingleCoil(addr, on)))
                }
                None => Err(ExceptionCode::IllegalDataAddress),
            },
            Request::ReadHoldingRegisters(addr, n) => {
                let (a, n) = (addr as usize, n as usize);
                self.registers
                    .lock()
                    .unwrap()
                    .get(a..a + n)
                    .map(|r| Some(Response::ReadHoldingRegisters(r.to_vec())))
                    .ok_or(ExceptionCode::IllegalDataAddress)
            }
            Request::WriteSingleRegister(addr, value) => {
                match self.registers.lock().unwrap().get_mut(addr as usize) {
                    Some(register) => {
                        *register = value;
                        self.register_writes.lock().unwrap().push((addr, value));
                        Ok(Some(Response::WriteSingleRegister(addr, value)))
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

    /// Waits until the agent has read the PLC twice more: it has seen what was just set.
    async fn polled(&self) {
        let seen = self.requests.load(Ordering::SeqCst);
        until("two more polls", || {
            self.requests.load(Ordering::SeqCst) >= seen + 2
        })
        .await;
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
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} never happened");
}

/// The part ids of the triggers a camera took, in order.
type Parts = Arc<Mutex<Vec<Option<String>>>>;

/// A station whose camera answers each trigger with `outcome`, a captured frame judged with
/// the next of `verdicts` (true: NG; unjudged once they run out), and the part ids it took.
fn judged_station(
    outcome: TriggerOutcome,
    verdicts: Vec<bool>,
) -> (Arc<Station>, Arc<Monitor>, Parts, impl Future<Output = ()>) {
    let monitor = Arc::new(Monitor::new("c1", "synthetic"));
    monitor.set_status(CameraStatus::Ok);
    let (station, mut rx) = Station::new(monitor.clone());
    let parts = Parts::default();
    let camera = {
        let (station, parts) = (station.clone(), parts.clone());
        async move {
            let mut verdicts = verdicts.into_iter();
            while let Some(trigger) = rx.recv().await {
                parts.lock().unwrap().push(trigger.request.part_id.clone());
                if outcome == TriggerOutcome::Captured {
                    station.captured(trigger, uuid::Uuid::now_v7(), verdicts.next());
                } else {
                    station.finish(trigger, outcome, None, None);
                }
            }
        }
    };
    (station, monitor, parts, camera)
}

fn handshake_at(address: SocketAddr) -> Handshake {
    in_coils(address, None, None)
}

/// The take-pending window of the tests' handshakes: far longer than any outage a test makes,
/// so a part found on reconnect is answered Error only for another reason (the agent's
/// restart). Tests about a window of 0 or a short one set their own.
const WINDOW: Duration = Duration::from_secs(60);

fn in_coils(address: SocketAddr, ok: Option<u16>, ng: Option<u16>) -> Handshake {
    Handshake {
        address,
        unit_id: 1,
        poll_interval: Duration::from_millis(10),
        request_timeout: Duration::from_millis(200),
        take_pending_within: WINDOW,
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

fn in_coils_judged(address: SocketAddr) -> Handshake {
    in_coils(address, Some(OK), Some(NG))
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

/// Starts the handshake and waits until `settled` (what it first writes is there).
async fn connected(
    station: Arc<Station>,
    handshake: Handshake,
    settled: impl Fn() -> bool,
) -> CancellationToken {
    let stop = CancellationToken::new();
    tokio::spawn(run(station, handshake, stop.clone()));
    until("the connection settled", settled).await;
    stop
}

/// A PLC served here and the agent's handshake with it, stopped when dropped.
struct Rig {
    plc: Plc,
    /// The station's camera health (its missed triggers).
    monitor: Arc<Monitor>,
    /// The part ids the camera took.
    parts: Parts,
    stop: CancellationToken,
}

impl Rig {
    /// Serves `plc` (as the test set it up), starts a station whose camera answers each
    /// trigger with `outcome` (captured frames judged with the next of `verdicts`) and the
    /// handshake `mode` maps at the PLC's address, and waits until `settled`.
    async fn start(
        plc: Plc,
        mode: impl FnOnce(SocketAddr) -> Handshake,
        outcome: TriggerOutcome,
        verdicts: Vec<bool>,
        settled: impl Fn(&Plc) -> bool,
    ) -> Rig {
        let address = plc.serve().await;
        let (station, monitor, parts, camera) = judged_station(outcome, verdicts);
        tokio::spawn(camera);
        let stop = connected(station, mode(address), || settled(&plc)).await;
        Rig {
            plc,
            monitor,
            parts,
            stop,
        }
    }

    /// As [`Rig::start`] with a fresh PLC whose first register write (the idle status word)
    /// is taken: the rig of a register-mode test about parts.
    async fn registers(outcome: TriggerOutcome, verdicts: Vec<bool>) -> Rig {
        let rig = Rig::start(Plc::default(), in_registers, outcome, verdicts, |plc| {
            !plc.register_writes.lock().unwrap().is_empty()
        })
        .await;
        rig.plc.take_register_writes();
        rig
    }

    fn parts(&self) -> Vec<Option<String>> {
        self.parts.lock().unwrap().clone()
    }

    fn missed(&self) -> u64 {
        self.monitor.snapshot().triggers_missed_total
    }

    /// The PLC's program sets part `value` and waits until the status word is `word`.
    async fn part(&self, value: u16, word: u16) {
        self.plc.set_trigger_register(value);
        until("the status word", || {
            self.plc.register(STATUS_REGISTER) == word
        })
        .await;
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Busy, Busy with `result`, Ready with `result`: a part's status words, in order.
fn status_words(result: u16) -> [(u16, u16); 3] {
    [
        (STATUS_REGISTER, status::BUSY),
        (STATUS_REGISTER, status::BUSY | result),
        (STATUS_REGISTER, status::READY | result),
    ]
}

/// A part's coil writes in coil mode with the OK and NG coils mapped: Busy (Ready, Error, OK
/// and NG lowered), the result, Ready.
fn coil_writes(result: Option<u16>) -> Vec<(u16, bool)> {
    let mut writes = vec![
        (BUSY, true),
        (READY, false),
        (ERROR, false),
        (OK, false),
        (NG, false),
        (ERROR, result == Some(ERROR)),
    ];
    writes.extend(result.filter(|&c| c != ERROR).map(|c| (c, true)));
    writes.extend([(BUSY, false), (READY, true)]);
    writes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_verdict_raises_ok_or_ng_between_busy_and_ready() {
    // See: issue #20 (PLC result registers).
    let rig = Rig::start(
        Plc::default(),
        in_coils_judged,
        TriggerOutcome::Captured,
        vec![false, true],
        |plc| plc.last_write().is_some(),
    )
    .await;
    let plc = &rig.plc;
    assert_eq!(
        plc.take_writes(),
        [(BUSY, false), (READY, false)],
        "the idle status"
    );
    // OK, then NG, then a part captured but not judged: neither.
    for result in [Some(OK), Some(NG), None] {
        plc.set_trigger(true);
        until("Ready", || plc.last_write() == Some((READY, true))).await;
        assert_eq!(plc.take_writes(), coil_writes(result), "result {result:?}");
        assert_eq!(plc.coil(OK), result == Some(OK));
        assert_eq!(plc.coil(NG), result == Some(NG));
        plc.set_trigger(false);
        until("Ready lowered", || !plc.coil(READY)).await;
        assert_eq!(plc.take_writes(), [(READY, false)]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rising_edge_is_one_part_answered_busy_then_result_then_ready() {
    let rig = Rig::start(
        Plc::default(),
        handshake_at,
        TriggerOutcome::Captured,
        vec![],
        |plc| plc.last_write().is_some(),
    )
    .await;
    let plc = &rig.plc;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        plc.take_writes(),
        [(BUSY, false), (READY, false)],
        "only the idle status"
    );

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
        until("Ready lowered", || !plc.coil(READY)).await;
        plc.polled().await;
        assert_eq!(
            plc.take_writes(),
            [(READY, false)],
            "the trigger fell: Ready lowered, the result kept until the next Busy"
        );
    }
    assert_eq!(rig.parts(), [None, None], "coils carry no part id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_the_camera_could_not_take_raises_error_before_ready() {
    let rig = Rig::start(
        Plc::default(),
        handshake_at,
        TriggerOutcome::CameraFailed,
        vec![],
        |plc| plc.last_write().is_some(),
    )
    .await;
    let plc = &rig.plc;
    plc.take_writes();
    plc.set_trigger(true);
    until("Ready", || plc.coil(READY)).await;
    let writes = plc.take_writes();
    assert_eq!(&writes[3..], [(ERROR, true), (BUSY, false), (READY, true)]);
    assert!(plc.coil(ERROR));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_already_answered_before_the_agent_connects_is_not_a_part() {
    // Coils: trigger high with Ready high is a part answered (the agent lowers Ready when the
    // trigger falls). Registers: READY is trusted on the agent's first connection only.
    for registers in [false, true] {
        let plc = Plc::default();
        if registers {
            plc.set_trigger_register(4);
            plc.registers.lock().unwrap()[STATUS_REGISTER as usize] = status::READY | status::OK;
        } else {
            plc.set_trigger(true);
            plc.coils.lock().unwrap()[READY as usize] = true;
        }
        let mode: fn(SocketAddr) -> Handshake = if registers {
            in_registers
        } else {
            handshake_at
        };
        // Two reads to settle, then polls.
        let rig = Rig::start(plc, mode, TriggerOutcome::Captured, vec![], |plc| {
            plc.requests.load(Ordering::SeqCst) >= 5
        })
        .await;
        assert!(rig.plc.take_writes().is_empty(), "registers {registers}");
        assert!(
            rig.plc.take_register_writes().is_empty(),
            "registers {registers}"
        );
        assert!(rig.parts().is_empty());
        assert_eq!(rig.missed(), 0);
    }
}

/// Makes the agent's connection fail (its requests unanswered until it reconnects), runs
/// `meanwhile` while it is away, and lets it connect again. The agent is away for one
/// request's deadline at least (200 ms).
async fn link_dropped(plc: &Plc, meanwhile: impl FnOnce()) {
    plc.silent.store(true, Ordering::SeqCst);
    // A second request: the first one missed its deadline and the agent connected again.
    let seen = plc.requests.load(Ordering::SeqCst);
    until("a request after the deadline", || {
        plc.requests.load(Ordering::SeqCst) >= seen + 2
    })
    .await;
    meanwhile();
    plc.silent.store(false, Ordering::SeqCst);
}

/// Register mode, `take_pending_within` as given: part 7 answered OK, then part 8 set while
/// the link is down (the PLC took 7's result and went on); returns once part 8 is answered.
async fn part_set_while_the_link_was_down(take_pending_within: Duration) -> Rig {
    let mode = |address| Handshake {
        take_pending_within,
        ..in_registers(address)
    };
    let rig = Rig::start(
        Plc::default(),
        mode,
        TriggerOutcome::Captured,
        vec![false, true, true],
        |plc| !plc.register_writes.lock().unwrap().is_empty(),
    )
    .await;
    rig.part(7, status::READY | status::OK).await;
    rig.plc.take_register_writes();
    link_dropped(&rig.plc, || rig.plc.set_trigger_register(8)).await;
    until("part 8 answered", || {
        let word = rig.plc.register(STATUS_REGISTER);
        word & status::READY != 0 && word != status::READY | status::OK
    })
    .await;
    rig
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_registers_a_part_set_during_a_short_outage_is_taken_on_reconnect() {
    // See: issue #20 (a part set while the PLC link was down: the PLC still waits on it, the
    // part is at the camera).
    let rig = part_set_while_the_link_was_down(WINDOW).await;
    assert_eq!(rig.plc.take_register_writes(), status_words(status::NG));
    assert_eq!(rig.parts(), [Some("7".into()), Some("8".into())]);
    assert_eq!(rig.missed(), 0);
    // Part 8 stays answered across another reconnect.
    link_dropped(&rig.plc, || {}).await;
    rig.plc.polled().await;
    rig.plc.polled().await;
    assert!(rig.plc.take_register_writes().is_empty());
    assert_eq!(rig.parts().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_registers_a_part_set_while_the_link_was_down_longer_is_answered_error() {
    // A review: READY left from part 7 read with trigger 8 made part 8 look answered. Then
    // (issue #20): a part left waiting longer than take_pending_within_ms is not taken.
    for take_pending_within in [Duration::ZERO, Duration::from_millis(100)] {
        let rig = part_set_while_the_link_was_down(take_pending_within).await;
        assert_eq!(
            rig.plc.take_register_writes(),
            status_words(status::ERROR),
            "{take_pending_within:?}"
        );
        assert_eq!(rig.missed(), 1, "part 8 missed");
        // Part 8 stays answered across another reconnect; part 9 is taken.
        link_dropped(&rig.plc, || {}).await;
        rig.plc.polled().await;
        rig.plc.polled().await;
        assert!(rig.plc.take_register_writes().is_empty());
        rig.part(9, status::READY | status::NG).await;
        assert_eq!(rig.parts(), [Some("7".into()), Some("9".into())]);
        assert_eq!(rig.missed(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_coils_a_part_set_during_a_short_outage_is_taken_on_reconnect() {
    // See: issue #20 (the rule is the same in coils).
    let rig = part_set_in_coils_while_the_link_was_down(WINDOW).await;
    assert_eq!(rig.plc.take_writes(), coil_writes(Some(NG)));
    assert_eq!(rig.parts().len(), 2);
    assert_eq!(rig.missed(), 0);
}

/// Coil mode with the OK and NG coils, `take_pending_within` as given: one part answered OK,
/// then the trigger raised again while the link is down; returns once that part is answered.
async fn part_set_in_coils_while_the_link_was_down(take_pending_within: Duration) -> Rig {
    let mode = |address| Handshake {
        take_pending_within,
        ..in_coils_judged(address)
    };
    let rig = Rig::start(
        Plc::default(),
        mode,
        TriggerOutcome::Captured,
        vec![false, true],
        |plc| plc.last_write() == Some((READY, false)),
    )
    .await;
    let plc = &rig.plc;
    plc.set_trigger(true);
    until("Ready", || plc.last_write() == Some((READY, true))).await;
    plc.set_trigger(false);
    until("Ready lowered", || !plc.coil(READY)).await;
    plc.take_writes();
    link_dropped(plc, || plc.set_trigger(true)).await;
    until("Ready", || plc.last_write() == Some((READY, true))).await;
    rig
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_coils_a_part_set_while_the_link_was_down_longer_is_answered_error() {
    // A review: only registers tested the long outage. The agent is away 200 ms at least.
    for take_pending_within in [Duration::ZERO, Duration::from_millis(100)] {
        let rig = part_set_in_coils_while_the_link_was_down(take_pending_within).await;
        assert_eq!(
            rig.plc.take_writes(),
            coil_writes(Some(ERROR)),
            "{take_pending_within:?}"
        );
        assert_eq!(rig.parts().len(), 1, "not taken");
        assert_eq!(rig.missed(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_registers_a_link_lost_after_a_pending_part_s_capture_writes_its_result_again() {
    // A review: the handshake of a part taken on reconnect can lose its link too; the frame
    // is stored, so the next connection writes its result again and takes no second frame.
    let rig = Rig::registers(TriggerOutcome::Captured, vec![false, true, true]).await;
    rig.part(7, status::READY | status::OK).await;
    rig.plc.take_register_writes();
    // Part 8's result write is lost: the link drops inside its handshake.
    *rig.plc.lost.lock().unwrap() = Some((STATUS_REGISTER, status::BUSY | status::NG));
    link_dropped(&rig.plc, || rig.plc.set_trigger_register(8)).await;
    until("part 8 answered", || {
        rig.plc.register(STATUS_REGISTER) == status::READY | status::NG
    })
    .await;
    assert_eq!(
        rig.plc.take_register_writes(),
        [
            (STATUS_REGISTER, status::BUSY),
            (STATUS_REGISTER, status::READY | status::NG),
        ],
        "Busy, the result lost, then Ready with it on the next connection"
    );
    assert_eq!(
        rig.parts(),
        [Some("7".into()), Some("8".into())],
        "one frame"
    );
    assert_eq!(rig.missed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_registers_a_result_lost_with_the_link_is_written_again_not_error() {
    // A review: the result write missed its deadline, and the reconnect answered Error for a
    // frame that was stored.
    let plc = Plc::default();
    *plc.lost.lock().unwrap() = Some((STATUS_REGISTER, status::BUSY | status::NG));
    let rig = Rig::start(
        plc,
        in_registers,
        TriggerOutcome::Captured,
        vec![true],
        |plc| !plc.register_writes.lock().unwrap().is_empty(),
    )
    .await;
    rig.plc.take_register_writes();
    rig.part(3, status::READY | status::NG).await;
    assert_eq!(
        rig.plc.take_register_writes(),
        [
            (STATUS_REGISTER, status::BUSY),
            (STATUS_REGISTER, status::READY | status::NG),
        ],
        "the result lost, then written with Ready on the next connection"
    );
    assert_eq!(rig.parts(), [Some("3".into())]);
    assert_eq!(rig.missed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_coils_a_ready_lost_with_the_link_is_written_again_with_the_result() {
    let rig = Rig::start(
        Plc::default(),
        in_coils_judged,
        TriggerOutcome::Captured,
        vec![false],
        |plc| plc.last_write() == Some((READY, false)),
    )
    .await;
    let plc = &rig.plc;
    plc.take_writes();
    // The PLC answers every write but Ready's: the link drops there.
    *plc.lost_coil.lock().unwrap() = Some((READY, true));
    plc.set_trigger(true);
    until("Ready", || plc.coil(READY)).await;
    assert!(plc.coil(OK) && !plc.coil(ERROR));
    assert_eq!(rig.parts().len(), 1);
    assert_eq!(rig.missed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_coils_a_part_left_busy_when_the_agent_stopped_is_answered_error_on_connect() {
    // See: issue #20 (a PLC left waiting on Busy across a reconnect).
    let plc = Plc::default();
    // The last agent raised Busy for this part, then stopped.
    plc.set_trigger(true);
    plc.coils.lock().unwrap()[BUSY as usize] = true;
    // The agent restarted: answered Error even with a 60 s window.
    let rig = Rig::start(
        plc,
        in_coils_judged,
        TriggerOutcome::Captured,
        vec![],
        |plc| plc.last_write() == Some((READY, true)),
    )
    .await;
    let plc = &rig.plc;
    assert_eq!(plc.take_writes(), coil_writes(Some(ERROR)));
    assert!(rig.parts().is_empty(), "not taken as a new part");
    assert_eq!(rig.missed(), 1);
    // The PLC lowers the trigger; the next rising edge is the next part.
    plc.set_trigger(false);
    plc.polled().await;
    plc.set_trigger(true);
    until("Ready", || plc.last_write() == Some((READY, true))).await;
    assert_eq!(rig.parts().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_registers_the_status_word_goes_busy_then_busy_with_the_result_then_ready_with_it() {
    // See: issue #20 (the handshake and the result in holding registers).
    let rig = Rig::start(
        Plc::default(),
        in_registers,
        TriggerOutcome::Captured,
        vec![false, true],
        |plc| plc.requests.load(Ordering::SeqCst) >= 5,
    )
    .await;
    let plc = &rig.plc;
    assert_eq!(
        plc.take_register_writes(),
        [(STATUS_REGISTER, status::IDLE)],
        "only the idle status before a trigger"
    );
    // OK, then NG, then a part captured but not judged; the PLC numbers its parts.
    for (part, result) in [(7, status::OK), (8, status::NG), (9, 0)] {
        rig.part(part, status::READY | result).await;
        assert_eq!(
            plc.take_register_writes(),
            status_words(result),
            "part {part}"
        );
        // Still set: no second part until the PLC sets another value.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(plc.take_register_writes().is_empty());
        assert!(plc.take_writes().is_empty(), "no coil is written");
        // Back to zero: the word is cleared, the result with it.
        rig.part(0, status::IDLE).await;
        assert_eq!(
            plc.take_register_writes(),
            [(STATUS_REGISTER, status::IDLE)]
        );
    }
    assert_eq!(
        rig.parts(),
        [Some("7".into()), Some("8".into()), Some("9".into())],
        "the trigger's value is the part id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_registers_a_new_value_without_zero_between_is_a_new_part() {
    // See: issue #20 (a value that changes from one part number to the next is a part).
    let rig = Rig::registers(TriggerOutcome::Captured, vec![true, false]).await;
    rig.part(41, status::READY | status::NG).await;
    rig.part(42, status::READY | status::OK).await;
    let mut expected = status_words(status::NG).to_vec();
    expected.extend(status_words(status::OK));
    assert_eq!(rig.plc.take_register_writes(), expected);
    assert_eq!(rig.parts(), [Some("41".into()), Some("42".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_registers_a_part_the_camera_could_not_take_is_error_with_ready() {
    let rig = Rig::registers(TriggerOutcome::CameraFailed, vec![]).await;
    rig.part(1, status::READY | status::ERROR).await;
    assert_eq!(rig.plc.take_register_writes(), status_words(status::ERROR));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_registers_a_part_in_flight_when_the_agent_stopped_is_answered_error_by_the_next() {
    // See: issue #20 (a PLC left waiting on Busy across a reconnect).
    let plc = Plc::default();
    let address = plc.serve().await;
    // The first agent's camera never answers: it stops mid-part, Busy written.
    let monitor = Arc::new(Monitor::new("c1", "synthetic"));
    monitor.set_status(CameraStatus::Ok);
    let (first, _taken) = Station::new(monitor);
    let stop = connected(first, in_registers(address), || {
        !plc.register_writes.lock().unwrap().is_empty()
    })
    .await;
    plc.set_trigger_register(5);
    until("Busy", || plc.register(STATUS_REGISTER) == status::BUSY).await;
    stop.cancel();
    plc.take_register_writes();

    // The next agent answers part 5: nothing captured, even with a 60 s window (it knows
    // nothing of how long part 5 waited). The same agent after a short reconnect would take
    // it within its window (the tests of a part set during a short outage).
    assert!(!in_registers(address).take_pending_within.is_zero());
    let rig = Rig::start(plc, in_registers, TriggerOutcome::Captured, vec![], |plc| {
        plc.register(STATUS_REGISTER) == status::READY | status::ERROR
    })
    .await;
    assert_eq!(rig.plc.take_register_writes(), status_words(status::ERROR));
    assert!(rig.parts().is_empty(), "part 5 is not taken again");
    assert_eq!(rig.missed(), 1);
    // The PLC clears the trigger: idle; then part 6 is taken.
    rig.part(0, status::IDLE).await;
    rig.part(6, status::READY).await;
    assert_eq!(rig.parts(), [Some("6".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_registers_a_stale_result_is_cleared_on_connect_when_the_trigger_is_zero() {
    let plc = Plc::default();
    // The last agent answered part 3 and stopped before the PLC cleared the trigger.
    plc.registers.lock().unwrap()[STATUS_REGISTER as usize] = status::READY | status::NG;
    let rig = Rig::start(plc, in_registers, TriggerOutcome::Captured, vec![], |plc| {
        plc.register(STATUS_REGISTER) == status::IDLE
    })
    .await;
    assert_eq!(
        rig.plc.take_register_writes(),
        [(STATUS_REGISTER, status::IDLE)]
    );
    assert_eq!(rig.missed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plc_that_stops_answering_times_out_and_is_connected_again() {
    // See: issue #20 (tokio-modbus requests have no deadline of their own).
    let plc = Plc::default();
    plc.silent.store(true, Ordering::SeqCst);
    let address = plc.serve().await;
    let (station, _monitor, parts, camera) = judged_station(TriggerOutcome::Captured, vec![]);
    tokio::spawn(camera);
    let handshake = in_registers(address);
    let mut backoff = Backoff::new(RECONNECT_INITIAL, RECONNECT_MAX);
    // A guard, not a measure: the request's own deadline (200 ms) ends it.
    let served = tokio::time::timeout(
        Duration::from_secs(30),
        serve(&station, &handshake, &mut backoff, &mut Memory::default()),
    )
    .await
    .expect("the request has a deadline");
    assert!(
        matches!(served, Err(PlcError::Timeout(t)) if t == handshake.request_timeout),
        "{served:?}"
    );

    // The handshake keeps connecting until the PLC answers, then serves parts.
    let stop = CancellationToken::new();
    tokio::spawn(run(station, handshake, stop.clone()));
    until("a second connection tried", || {
        plc.requests.load(Ordering::SeqCst) >= 2
    })
    .await;
    plc.silent.store(false, Ordering::SeqCst);
    until("idle status", || !plc.take_register_writes().is_empty()).await;
    plc.set_trigger_register(12);
    until("Ready", || plc.register(STATUS_REGISTER) == status::READY).await;
    assert_eq!(*parts.lock().unwrap(), [Some("12".into())]);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modbus_exception_backs_off_and_only_a_settled_connection_resets_the_backoff() {
    // See: issue #20 (a PLC that refuses every request was asked again every 200 ms).
    let plc = Plc::default();
    let address = plc.serve().await;
    let (station, _monitor, _parts, camera) = judged_station(TriggerOutcome::Captured, vec![]);
    tokio::spawn(camera);
    // A trigger register the PLC does not have: every read is refused (IllegalDataAddress).
    let refused = Handshake {
        signals: Signals::Registers {
            trigger: 100,
            status: STATUS_REGISTER,
        },
        ..in_registers(address)
    };
    let mut backoff = Backoff::new(RECONNECT_INITIAL, RECONNECT_MAX);
    let mut waits = Vec::new();
    for _ in 0..4 {
        let served = serve(&station, &refused, &mut backoff, &mut Memory::default()).await;
        assert!(
            matches!(
                served,
                Err(PlcError::Exception(ExceptionCode::IllegalDataAddress))
            ),
            "{served:?}"
        );
        // Each connection succeeded; the backoff grew all the same.
        waits.push(backoff.fail(None, &mut rand::rng()));
    }
    assert_eq!(backoff.failures(), 4);
    assert!(waits[3] >= RECONNECT_INITIAL * 4, "{waits:?}");
    // A connection that reads the PLC and answers it resets the backoff.
    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        serve(
            &station,
            &in_registers(address),
            &mut backoff,
            &mut Memory::default(),
        ),
    )
    .await;
    assert_eq!(backoff.failures(), 0);
}
