//! Live results (`GET /api/v1/events`): a Server-Sent Events stream.
//!
//! Each result, as it is committed (an NG one by default; every one with `all=true`), is one
//! event: `event: result`, `id:` its position in the stream (an increasing integer), and
//! `data:` the [`Analysis`](crate::Analysis) as JSON. A result that is enriched later (a remote
//! verdict) comes again with a new id. A client that reconnects sends the last id it saw as
//! `Last-Event-ID` (browsers' `EventSource` does) and first receives what it missed, as far as
//! the server still keeps (see [`LAGGED_EVENT`]). Comment lines (`: keep-alive`) keep idle
//! connections open.

/// The event name of a result.
pub const RESULT_EVENT: &str = "result";

/// The event sent when events were missed that the server no longer keeps (a reconnect after
/// a long time, or a client too slow to read): its data is the number missed, if known, else
/// empty. A dashboard reloads its lists.
pub const LAGGED_EVENT: &str = "lagged";
