//! The connection: handshake, the reader task (confirms, returns, closes, heartbeats), the
//! writer task (batches of frames, heartbeats) and the [`Publisher`] handle the sink holds.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lapin::uri::AMQPUri;
use service_kit::amqp::AmqpTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::codec::{
    self, DecodeError, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, Frame, Properties,
    Publish, Reader, Writer, method,
};
use super::stream::{self, StreamReader as OwnedReadHalf, StreamWriter as OwnedWriteHalf};
use crate::sink::Outcome;

/// The one channel the publisher uses.
const CHANNEL: u16 = 1;
/// The largest frame asked for (RabbitMQ's default); a broker may lower it.
const FRAME_MAX: u32 = 131_072;
/// Heartbeat interval when neither the URL nor the broker set one, seconds.
const DEFAULT_HEARTBEAT: u16 = 60;
/// Frames held before they are handed to the writer even without a flush.
const HAND_OVER_BYTES: usize = 256 * 1024;
/// How long an `exchange.declare` may wait for its answer.
const DECLARE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach the broker: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] stream::TlsError),
    #[error("the broker refused: {code} {text}")]
    Refused { code: u16, text: String },
    #[error("the broker offers no PLAIN authentication (it offers {offered})")]
    NoPlainAuth { offered: String },
    #[error("unexpected answer from the broker during the handshake: class {0}, method {1}")]
    Unexpected(u16, u16),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("the broker closed the connection during the handshake")]
    Eof,
}

/// One publish awaiting its confirm.
#[derive(Debug)]
struct Slot {
    /// Identifies the message if the broker returns it (a return carries no delivery tag).
    fingerprint: u64,
    body: Arc<[u8]>,
    returned: Option<(u16, String)>,
    outcome: Option<Outcome>,
    waker: Option<Waker>,
    /// Its future completed or was dropped.
    done: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Why the connection is unusable, once it is.
    failed: Option<String>,
    /// Why RabbitMQ blocked the connection (`connection.blocked`: a memory or disk alarm),
    /// until `connection.unblocked`.
    blocked: Option<String>,
    /// Unfinished publishes in tag order; `slots[i].tag == first_tag + i`.
    slots: VecDeque<Slot>,
    first_tag: u64,
    /// Returns are matched after the last returned publish (the broker keeps their order).
    returned_up_to: u64,
    declare: Option<oneshot::Sender<Result<(), String>>>,
    close_ok: Option<oneshot::Sender<()>>,
}

impl State {
    fn slot(&mut self, tag: u64) -> Option<&mut Slot> {
        let index = usize::try_from(tag.checked_sub(self.first_tag)?).ok()?;
        self.slots.get_mut(index)
    }

    fn resolve(&mut self, tag: u64, acked: bool) {
        if let Some(slot) = self.slot(tag)
            && slot.outcome.is_none()
        {
            slot.outcome = Some(match (acked, slot.returned.take()) {
                (true, None) => Outcome::Delivered,
                (true, Some((reply_code, reply_text))) => Outcome::Returned {
                    reply_code,
                    reply_text,
                },
                (false, _) => Outcome::Nacked,
            });
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
        }
    }

    fn confirm(&mut self, tag: u64, multiple: bool, acked: bool) {
        if multiple {
            // Bounded by the book: a tag past the last publish resolves nothing more.
            let last = self.first_tag + self.slots.len() as u64;
            for each in self.first_tag..=tag.min(last) {
                self.resolve(each, acked);
            }
        } else {
            self.resolve(tag, acked);
        }
    }

    fn fail(&mut self, reason: String) {
        if self.failed.is_some() {
            return;
        }
        for slot in &mut self.slots {
            if slot.outcome.is_none() {
                slot.outcome = Some(Outcome::Failed(reason.clone()));
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            }
        }
        if let Some(declare) = self.declare.take() {
            let _ = declare.send(Err(reason.clone()));
        }
        self.failed = Some(reason);
    }

    fn drop_finished(&mut self) {
        while self.slots.front().is_some_and(|slot| slot.done) {
            self.slots.pop_front();
            self.first_tag += 1;
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The confirm of one publish: resolves to the broker's answer, or to `Failed` when the
/// connection ends first.
#[derive(Debug)]
pub struct ConfirmFuture {
    tag: u64,
    shared: Arc<Shared>,
}

impl Future for ConfirmFuture {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut state = self.shared.lock();
        let Some(slot) = state.slot(self.tag) else {
            return Poll::Ready(Outcome::Failed(
                state
                    .failed
                    .clone()
                    .unwrap_or_else(|| "confirm already taken".to_owned()),
            ));
        };
        match slot.outcome.take() {
            Some(outcome) => {
                slot.done = true;
                state.drop_finished();
                Poll::Ready(outcome)
            }
            None => {
                if !slot
                    .waker
                    .as_ref()
                    .is_some_and(|waker| waker.will_wake(cx.waker()))
                {
                    slot.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for ConfirmFuture {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(slot) = state.slot(self.tag) {
            slot.done = true;
            slot.waker = None;
        }
        state.drop_finished();
    }
}

/// A connected publisher: one channel in confirm mode.
#[derive(Debug)]
pub struct Publisher {
    shared: Arc<Shared>,
    /// Frames encoded and not yet handed to the writer.
    pending: BytesMut,
    to_writer: mpsc::UnboundedSender<Bytes>,
    next_tag: u64,
    frame_max: u32,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl Publisher {
    /// Connects (over TLS for `amqps://`, with `tls`), authenticates, opens the vhost and one
    /// channel, and selects confirm mode.
    pub async fn connect(
        uri: &AMQPUri,
        tls: &AmqpTls,
        connection_name: &str,
    ) -> Result<Self, ConnectError> {
        let (mut read, mut write) = stream::connect(uri, tls).await?;
        let mut input = BytesMut::with_capacity(16 * 1024);
        let mut out = BytesMut::with_capacity(4096);

        write.write_all(codec::PROTOCOL_HEADER).await?;
        let start = expect(&mut read, &mut input, method::CONNECTION_START).await?;
        let mut reader = Reader::new(&start[4..]);
        let _major = reader.u8()?;
        let _minor = reader.u8()?;
        reader.skip_table()?;
        let mechanisms = String::from_utf8_lossy(reader.long_string()?).into_owned();
        if !mechanisms.split(' ').any(|mechanism| mechanism == "PLAIN") {
            return Err(ConnectError::NoPlainAuth {
                offered: mechanisms,
            });
        }

        let user = &uri.authority.userinfo;
        let mut response = Vec::with_capacity(user.username.len() + user.password.len() + 2);
        response.push(0);
        response.extend_from_slice(user.username.as_bytes());
        response.push(0);
        response.extend_from_slice(user.password.as_bytes());
        let properties = client_properties(connection_name);
        Writer::new(&mut out).whole_method(0, method::CONNECTION_START_OK, |writer| {
            writer
                .raw(&properties)
                .short_string("PLAIN")
                .long_string(&response)
                .short_string("en_US");
        });
        send(&mut write, &mut out).await?;

        let tune = expect(&mut read, &mut input, method::CONNECTION_TUNE).await?;
        let mut reader = Reader::new(&tune[4..]);
        let _channel_max = reader.u16()?;
        let server_frame_max = reader.u32()?;
        let server_heartbeat = reader.u16()?;
        let frame_max = match server_frame_max {
            0 => FRAME_MAX,
            limit => limit.min(uri.query.frame_max.unwrap_or(FRAME_MAX)),
        };
        let heartbeat = uri.query.heartbeat.unwrap_or(match server_heartbeat {
            0 => DEFAULT_HEARTBEAT,
            seconds => seconds,
        });
        let mut writer = Writer::new(&mut out);
        writer.whole_method(0, method::CONNECTION_TUNE_OK, |writer| {
            writer.u16(CHANNEL).u32(frame_max).u16(heartbeat);
        });
        writer.whole_method(0, method::CONNECTION_OPEN, |writer| {
            writer.short_string(&uri.vhost).short_string("").u8(0);
        });
        send(&mut write, &mut out).await?;
        expect(&mut read, &mut input, method::CONNECTION_OPEN_OK).await?;

        let mut writer = Writer::new(&mut out);
        writer.whole_method(CHANNEL, method::CHANNEL_OPEN, |writer| {
            writer.short_string("");
        });
        writer.whole_method(CHANNEL, method::CONFIRM_SELECT, |writer| {
            writer.u8(0);
        });
        send(&mut write, &mut out).await?;
        expect(&mut read, &mut input, method::CHANNEL_OPEN_OK).await?;
        expect(&mut read, &mut input, method::CONFIRM_SELECT_OK).await?;
        tracing::debug!(
            host = %uri.authority.host,
            port = uri.authority.port,
            vhost = %uri.vhost,
            frame_max,
            heartbeat_s = heartbeat,
            "AMQP connection open: channel 1 in confirm mode"
        );

        let shared = Arc::new(Shared::default());
        shared.lock().first_tag = 1;
        let (to_writer, from_publisher) = mpsc::unbounded_channel();
        let heartbeat = (heartbeat > 0).then(|| Duration::from_secs(u64::from(heartbeat)));
        let reader = tokio::spawn(read_loop(
            read,
            input,
            frame_max,
            heartbeat,
            Arc::clone(&shared),
            to_writer.clone(),
        ));
        let writer = tokio::spawn(write_loop(
            write,
            from_publisher,
            heartbeat,
            Arc::clone(&shared),
        ));
        Ok(Self {
            shared,
            pending: BytesMut::with_capacity(64 * 1024),
            to_writer,
            next_tag: 1,
            frame_max,
            reader,
            writer,
        })
    }

    /// Why the connection is unusable, if it is.
    pub fn failure(&self) -> Option<String> {
        self.shared.lock().failed.clone()
    }

    /// Why RabbitMQ blocks this connection's publishes (a resource alarm), while it does.
    pub fn blocked(&self) -> Option<String> {
        self.shared.lock().blocked.clone()
    }

    /// Declares a durable exchange of `kind` and waits for the broker's answer.
    pub async fn declare_exchange(&mut self, exchange: &str, kind: &str) -> Result<(), String> {
        let (answer, answered) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if let Some(reason) = &state.failed {
                return Err(reason.clone());
            }
            state.declare = Some(answer);
        }
        Writer::new(&mut self.pending).whole_method(CHANNEL, method::EXCHANGE_DECLARE, |writer| {
            // passive 0, durable 1, auto-delete 0, internal 0, no-wait 0
            writer
                .u16(0)
                .short_string(exchange)
                .short_string(kind)
                .u8(0b0000_0010)
                .u32(0);
        });
        self.flush();
        match tokio::time::timeout(DECLARE_TIMEOUT, answered).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the connection ended during exchange.declare".to_owned()),
            Err(_) => Err("no answer to exchange.declare within 10 s".to_owned()),
        }
    }

    /// Encodes one persistent, mandatory publish; the frames go out at the next
    /// [`Self::flush`] (or once enough are held). Returns its confirm.
    pub fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        properties: Properties<'_>,
        body: &Arc<[u8]>,
    ) -> Result<ConfirmFuture, String> {
        let tag = self.next_tag;
        {
            let mut state = self.shared.lock();
            if let Some(reason) = &state.failed {
                return Err(reason.clone());
            }
            if state.slots.is_empty() {
                state.first_tag = tag;
            }
            state.slots.push_back(Slot {
                fingerprint: fingerprint(exchange, routing_key),
                body: Arc::clone(body),
                returned: None,
                outcome: None,
                waker: None,
                done: false,
            });
        }
        self.next_tag += 1;
        Publish {
            channel: CHANNEL,
            exchange,
            routing_key,
            mandatory: true,
            properties,
            body,
        }
        .write(&mut Writer::new(&mut self.pending), self.frame_max);
        if self.pending.len() >= HAND_OVER_BYTES {
            self.flush();
        }
        Ok(ConfirmFuture {
            tag,
            shared: Arc::clone(&self.shared),
        })
    }

    /// Hands the frames encoded so far to the writer task (which never blocks the caller).
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let frames = self.pending.split().freeze();
        if self.to_writer.send(frames).is_err() {
            self.shared
                .lock()
                .fail("the connection's writer stopped".to_owned());
        }
    }

    /// Closes the connection politely and waits for the broker's `close-ok` (the caller
    /// bounds the wait).
    pub async fn close(mut self) {
        let (done, closed) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if state.failed.is_some() {
                return;
            }
            state.close_ok = Some(done);
        }
        Writer::new(&mut self.pending).whole_method(0, method::CONNECTION_CLOSE, |writer| {
            writer.u16(200).short_string("relay stopping").u16(0).u16(0);
        });
        self.flush();
        let _ = closed.await;
    }
}

/// A hash of where a message went, to attribute a `basic.return` (FNV-1a).
fn fingerprint(exchange: &str, routing_key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in exchange.bytes().chain([0]).chain(routing_key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The client-properties table of `connection.start-ok`.
fn client_properties(connection_name: &str) -> Vec<u8> {
    let mut capabilities = BytesMut::new();
    {
        let mut writer = Writer::new(&mut capabilities);
        for name in [
            "publisher_confirms",
            "basic.nack",
            "connection.blocked",
            "authentication_failure_close",
        ] {
            writer.short_string(name).u8(b't').u8(1);
        }
    }
    let mut entries = BytesMut::new();
    {
        let mut writer = Writer::new(&mut entries);
        for (name, value) in [
            ("product", "outbox-relay"),
            ("version", env!("CARGO_PKG_VERSION")),
            ("connection_name", connection_name),
        ] {
            writer
                .short_string(name)
                .u8(b'S')
                .long_string(value.as_bytes());
        }
        writer
            .short_string("capabilities")
            .u8(b'F')
            .u32(u32::try_from(capabilities.len()).unwrap_or(0))
            .raw(&capabilities);
    }
    let mut table = Vec::with_capacity(entries.len() + 4);
    table.extend_from_slice(&u32::try_from(entries.len()).unwrap_or(0).to_be_bytes());
    table.extend_from_slice(&entries);
    table
}

async fn send(write: &mut OwnedWriteHalf, out: &mut BytesMut) -> std::io::Result<()> {
    write.write_all(out).await?;
    out.clear();
    Ok(())
}

async fn read_frame(
    read: &mut OwnedReadHalf,
    input: &mut BytesMut,
    frame_max: u32,
) -> Result<Option<Frame>, ConnectError> {
    loop {
        if let Some(frame) = codec::take_frame(input, frame_max)? {
            return Ok(Some(frame));
        }
        if read.read_buf(input).await? == 0 {
            return Ok(None);
        }
    }
}

/// Reads until the method `id` on any channel; a `connection.close` is the broker's refusal.
async fn expect(
    read: &mut OwnedReadHalf,
    input: &mut BytesMut,
    id: (u16, u16),
) -> Result<BytesMut, ConnectError> {
    loop {
        let frame = read_frame(read, input, FRAME_MAX)
            .await?
            .ok_or(ConnectError::Eof)?;
        if frame.kind != FRAME_METHOD {
            continue;
        }
        let mut reader = Reader::new(&frame.payload);
        let found = reader.method_id()?;
        if found == id {
            return Ok(frame.payload);
        }
        if found == method::CONNECTION_CLOSE || found == method::CHANNEL_CLOSE {
            return Err(ConnectError::Refused {
                code: reader.u16()?,
                text: reader.short_string()?,
            });
        }
        return Err(ConnectError::Unexpected(found.0, found.1));
    }
}

/// A `basic.return` whose content is still arriving.
struct Returning {
    reply_code: u16,
    reply_text: String,
    fingerprint: u64,
    body_size: Option<u64>,
    body: Vec<u8>,
}

async fn read_loop(
    mut read: OwnedReadHalf,
    mut input: BytesMut,
    frame_max: u32,
    heartbeat: Option<Duration>,
    shared: Arc<Shared>,
    to_writer: mpsc::UnboundedSender<Bytes>,
) {
    // Two missed heartbeats and a bit: the broker is gone.
    let silence_limit = heartbeat.map(|interval| interval * 2 + Duration::from_secs(1));
    let mut returning: Option<Returning> = None;
    let reason = loop {
        let frame = match silence_limit {
            Some(limit) => {
                match tokio::time::timeout(limit, read_frame(&mut read, &mut input, frame_max))
                    .await
                {
                    Ok(frame) => frame,
                    Err(_) => {
                        break format!("no frame from RabbitMQ for {limit:?} (heartbeats missed)");
                    }
                }
            }
            None => read_frame(&mut read, &mut input, frame_max).await,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break "RabbitMQ closed the connection".to_owned(),
            Err(error) => break format!("reading from RabbitMQ failed: {error}"),
        };
        match handle_frame(frame, &shared, &to_writer, &mut returning) {
            Ok(None) => {}
            Ok(Some(reason)) => break reason,
            Err(error) => break error.to_string(),
        }
    };
    let mut state = shared.lock();
    if let Some(close_ok) = state.close_ok.take() {
        let _ = close_ok.send(());
    }
    state.fail(reason);
}

/// Handles one frame; `Some(reason)` when the connection is over.
fn handle_frame(
    frame: Frame,
    shared: &Shared,
    to_writer: &mpsc::UnboundedSender<Bytes>,
    returning: &mut Option<Returning>,
) -> Result<Option<String>, DecodeError> {
    match frame.kind {
        FRAME_HEARTBEAT => Ok(None),
        FRAME_METHOD => {
            let mut reader = Reader::new(&frame.payload);
            handle_method(
                reader.method_id()?,
                &mut reader,
                shared,
                to_writer,
                returning,
            )
        }
        FRAME_HEADER => {
            if let Some(pending) = returning.as_mut() {
                let size = codec::content_body_size(&frame.payload)?;
                pending.body_size = Some(size);
                if size == 0 {
                    return Ok(finish_return(shared, returning));
                }
            }
            Ok(None)
        }
        FRAME_BODY => {
            if let Some(pending) = returning.as_mut() {
                pending.body.extend_from_slice(&frame.payload);
                if pending
                    .body_size
                    .is_some_and(|size| pending.body.len() as u64 >= size)
                {
                    return Ok(finish_return(shared, returning));
                }
            }
            Ok(None)
        }
        _ => Err(DecodeError("unknown frame type")),
    }
}

fn handle_method(
    id: (u16, u16),
    reader: &mut Reader<'_>,
    shared: &Shared,
    to_writer: &mpsc::UnboundedSender<Bytes>,
    returning: &mut Option<Returning>,
) -> Result<Option<String>, DecodeError> {
    let reply = |id: (u16, u16), channel: u16, fill: &dyn Fn(&mut Writer<'_>)| {
        let mut out = BytesMut::with_capacity(32);
        Writer::new(&mut out).whole_method(channel, id, |writer| fill(writer));
        let _ = to_writer.send(out.freeze());
    };
    match id {
        method::BASIC_ACK | method::BASIC_NACK => {
            let tag = reader.u64()?;
            let multiple = reader.u8()? & 1 == 1;
            shared
                .lock()
                .confirm(tag, multiple, id == method::BASIC_ACK);
        }
        method::BASIC_RETURN => {
            let reply_code = reader.u16()?;
            let reply_text = reader.short_string()?;
            let exchange = reader.short_string()?;
            let routing_key = reader.short_string()?;
            *returning = Some(Returning {
                reply_code,
                reply_text,
                fingerprint: fingerprint(&exchange, &routing_key),
                body_size: None,
                body: Vec::new(),
            });
        }
        method::EXCHANGE_DECLARE_OK => {
            if let Some(answer) = shared.lock().declare.take() {
                let _ = answer.send(Ok(()));
            }
        }
        method::CHANNEL_FLOW => {
            let active = reader.u8()?;
            reply(method::CHANNEL_FLOW_OK, CHANNEL, &|writer| {
                writer.u8(active);
            });
        }
        method::CHANNEL_CLOSE => {
            let code = reader.u16()?;
            let text = reader.short_string()?;
            reply(method::CHANNEL_CLOSE_OK, CHANNEL, &|_| {});
            return Ok(Some(format!("RabbitMQ closed the channel: {code} {text}")));
        }
        method::CONNECTION_CLOSE => {
            let code = reader.u16()?;
            let text = reader.short_string()?;
            reply(method::CONNECTION_CLOSE_OK, 0, &|_| {});
            return Ok(Some(format!(
                "RabbitMQ closed the connection: {code} {text}"
            )));
        }
        method::CONNECTION_CLOSE_OK => {
            return Ok(Some("connection closed".to_owned()));
        }
        method::CONNECTION_BLOCKED => {
            let reason = reader.short_string()?;
            tracing::warn!(%reason, "RabbitMQ blocked the connection: publishing waits until it unblocks (a resource alarm: memory or disk)");
            shared.lock().blocked = Some(reason);
        }
        method::CONNECTION_UNBLOCKED => {
            tracing::info!("RabbitMQ unblocked the connection");
            shared.lock().blocked = None;
        }
        _ => {}
    }
    Ok(None)
}

/// Attributes a completely received return to the earliest matching unconfirmed publish
/// after the previous return. No match would mean a returned message counted as delivered,
/// so the connection is given up instead (everything unconfirmed is published again).
fn finish_return(shared: &Shared, returning: &mut Option<Returning>) -> Option<String> {
    let returned = returning.take()?;
    let mut state = shared.lock();
    let first_tag = state.first_tag;
    let after = state.returned_up_to;
    let found = state.slots.iter_mut().zip(first_tag..).find(|(slot, tag)| {
        *tag > after
            && slot.outcome.is_none()
            && slot.returned.is_none()
            && slot.fingerprint == returned.fingerprint
            && *slot.body == *returned.body
    });
    match found {
        Some((slot, tag)) => {
            slot.returned = Some((returned.reply_code, returned.reply_text));
            state.returned_up_to = tag;
            None
        }
        None => Some(format!(
            "RabbitMQ returned a message ({} {}) that matches no unconfirmed publish",
            returned.reply_code, returned.reply_text
        )),
    }
}

async fn write_loop(
    mut write: OwnedWriteHalf,
    mut frames: mpsc::UnboundedReceiver<Bytes>,
    heartbeat: Option<Duration>,
    shared: Arc<Shared>,
) {
    let mut heartbeat_frame = BytesMut::with_capacity(8);
    Writer::new(&mut heartbeat_frame).heartbeat();
    let heartbeat_frame = heartbeat_frame.freeze();
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        let received = match heartbeat {
            // Something to write at least every half interval: a heartbeat if nothing else.
            Some(interval) => match tokio::time::timeout(interval / 2, frames.recv()).await {
                Ok(received) => received,
                Err(_) => Some(heartbeat_frame.clone()),
            },
            None => frames.recv().await,
        };
        let Some(first) = received else {
            let _ = write.shutdown().await;
            return;
        };
        batch.push(first);
        while let Ok(more) = frames.try_recv() {
            batch.push(more);
        }
        for frames in batch.drain(..) {
            if let Err(error) = write.write_all(&frames).await {
                shared
                    .lock()
                    .fail(format!("writing to RabbitMQ failed: {error}"));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(tags: std::ops::RangeInclusive<u64>) -> State {
        let mut state = State {
            first_tag: *tags.start(),
            ..State::default()
        };
        for _ in tags {
            state.slots.push_back(Slot {
                fingerprint: fingerprint("x", "k"),
                body: Arc::from(&b"{}"[..]),
                returned: None,
                outcome: None,
                waker: None,
                done: false,
            });
        }
        state
    }

    #[test]
    fn a_multiple_ack_resolves_every_tag_up_to_it_and_no_further() {
        let mut state = state_with(1..=5);
        state.confirm(3, true, true);
        let outcomes: Vec<_> = state
            .slots
            .iter()
            .map(|slot| slot.outcome.clone())
            .collect();
        assert_eq!(
            outcomes,
            vec![
                Some(Outcome::Delivered),
                Some(Outcome::Delivered),
                Some(Outcome::Delivered),
                None,
                None
            ]
        );
        state.confirm(5, false, false);
        assert_eq!(state.slots[4].outcome, Some(Outcome::Nacked));
        assert_eq!(state.slots[3].outcome, None);
        // A tag far past the last publish (a confused broker) ends at the book.
        state.confirm(u64::MAX, true, true);
        assert_eq!(state.slots[3].outcome, Some(Outcome::Delivered));
    }

    #[test]
    fn a_returned_publish_resolves_as_returned_when_acked() {
        let mut state = state_with(1..=2);
        state.slots[1].returned = Some((312, "NO_ROUTE".into()));
        state.confirm(2, true, true);
        assert_eq!(state.slots[0].outcome, Some(Outcome::Delivered));
        assert_eq!(
            state.slots[1].outcome,
            Some(Outcome::Returned {
                reply_code: 312,
                reply_text: "NO_ROUTE".into()
            })
        );
    }

    #[test]
    fn a_failure_resolves_the_unconfirmed_only() {
        let mut state = state_with(1..=3);
        state.confirm(1, false, true);
        state.fail("gone".into());
        state.confirm(3, false, true);
        assert_eq!(state.slots[0].outcome, Some(Outcome::Delivered));
        assert_eq!(state.slots[1].outcome, Some(Outcome::Failed("gone".into())));
        assert_eq!(state.slots[2].outcome, Some(Outcome::Failed("gone".into())));
    }

    #[test]
    fn a_return_is_attributed_by_destination_and_body_or_gives_the_connection_up() {
        let shared = Shared::default();
        *shared.lock() = state_with(1..=3);
        shared.lock().slots[2].fingerprint = fingerprint("x", "other");
        let mut returning = Some(Returning {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
            fingerprint: fingerprint("x", "other"),
            body_size: Some(2),
            body: b"{}".to_vec(),
        });
        assert_eq!(finish_return(&shared, &mut returning), None);
        assert!(shared.lock().slots[2].returned.is_some());
        assert!(shared.lock().slots[0].returned.is_none());

        let mut unknown = Some(Returning {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
            fingerprint: fingerprint("y", "k"),
            body_size: Some(2),
            body: b"{}".to_vec(),
        });
        assert!(finish_return(&shared, &mut unknown).is_some());
    }

    #[test]
    fn finished_confirms_leave_the_book_in_order() {
        let mut state = state_with(1..=3);
        state.slots[1].done = true;
        state.drop_finished();
        assert_eq!(state.first_tag, 1, "the oldest is still pending");
        state.slots[0].done = true;
        state.drop_finished();
        assert_eq!(state.first_tag, 3);
        assert_eq!(state.slots.len(), 1);
        assert!(state.slot(2).is_none());
        assert!(state.slot(3).is_some());
    }
}
