//! AMQP 0-9-1 frames, as far as a publisher needs them: the methods it sends encoded
//! straight into an output buffer (no intermediate values per message), and the frames and
//! methods the broker sends it decoded from an input buffer.
//!
//! Wire layout (AMQP 0-9-1 §4.2.3): `type:u8 channel:u16 size:u32 payload 0xCE`; a method
//! payload starts with `class:u16 method:u16`; a content header with
//! `class:u16 weight:u16 body_size:u64 flags:u16 properties`.

use bytes::{Buf, BufMut, BytesMut};

pub(crate) const FRAME_METHOD: u8 = 1;
pub(crate) const FRAME_HEADER: u8 = 2;
pub(crate) const FRAME_BODY: u8 = 3;
pub(crate) const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// Type, channel and size before the payload, and the end octet after it.
pub(crate) const FRAME_OVERHEAD: usize = 8;

/// The protocol header a client opens with.
pub(crate) const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

/// (class, method) ids of the methods used here.
pub(crate) mod method {
    pub const CONNECTION_START: (u16, u16) = (10, 10);
    pub const CONNECTION_START_OK: (u16, u16) = (10, 11);
    pub const CONNECTION_TUNE: (u16, u16) = (10, 30);
    pub const CONNECTION_TUNE_OK: (u16, u16) = (10, 31);
    pub const CONNECTION_OPEN: (u16, u16) = (10, 40);
    pub const CONNECTION_OPEN_OK: (u16, u16) = (10, 41);
    pub const CONNECTION_CLOSE: (u16, u16) = (10, 50);
    pub const CONNECTION_CLOSE_OK: (u16, u16) = (10, 51);
    pub const CONNECTION_BLOCKED: (u16, u16) = (10, 60);
    pub const CONNECTION_UNBLOCKED: (u16, u16) = (10, 61);
    pub const CHANNEL_OPEN: (u16, u16) = (20, 10);
    pub const CHANNEL_OPEN_OK: (u16, u16) = (20, 11);
    pub const CHANNEL_FLOW: (u16, u16) = (20, 20);
    pub const CHANNEL_FLOW_OK: (u16, u16) = (20, 21);
    pub const CHANNEL_CLOSE: (u16, u16) = (20, 40);
    pub const CHANNEL_CLOSE_OK: (u16, u16) = (20, 41);
    pub const EXCHANGE_DECLARE: (u16, u16) = (40, 10);
    pub const EXCHANGE_DECLARE_OK: (u16, u16) = (40, 11);
    pub const BASIC_PUBLISH: (u16, u16) = (60, 40);
    pub const BASIC_RETURN: (u16, u16) = (60, 50);
    pub const BASIC_ACK: (u16, u16) = (60, 80);
    pub const BASIC_NACK: (u16, u16) = (60, 120);
    pub const CONFIRM_SELECT: (u16, u16) = (85, 10);
    pub const CONFIRM_SELECT_OK: (u16, u16) = (85, 11);
}

/// The basic class id (content headers of published and returned messages).
const CLASS_BASIC: u16 = 60;

/// A malformed frame or method from the broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed AMQP frame from the broker: {0}")]
pub struct DecodeError(pub &'static str);

/// One frame read from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub kind: u8,
    pub channel: u16,
    pub payload: BytesMut,
}

/// Takes one whole frame off the front of `input`, or `None` until enough bytes arrived.
pub(crate) fn take_frame(
    input: &mut BytesMut,
    frame_max: u32,
) -> Result<Option<Frame>, DecodeError> {
    if input.len() < 7 {
        return Ok(None);
    }
    let size = u32::from_be_bytes([input[3], input[4], input[5], input[6]]);
    if size > frame_max.max(4096) {
        return Err(DecodeError("frame larger than the negotiated frame_max"));
    }
    let size = size as usize;
    if input.len() < size + FRAME_OVERHEAD {
        input.reserve(size + FRAME_OVERHEAD - input.len());
        return Ok(None);
    }
    let kind = input[0];
    let channel = u16::from_be_bytes([input[1], input[2]]);
    if input[7 + size] != FRAME_END {
        return Err(DecodeError("frame does not end with 0xCE"));
    }
    input.advance(7);
    let payload = input.split_to(size);
    input.advance(1);
    Ok(Some(Frame {
        kind,
        channel,
        payload,
    }))
}

/// Reads the fields of a method or content header, each read checked for length.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < count {
            return Err(DecodeError("truncated method"));
        }
        let (head, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let bytes = self.take(8)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(bytes);
        Ok(u64::from_be_bytes(array))
    }

    pub fn short_string(&mut self) -> Result<String, DecodeError> {
        let length = usize::from(self.u8()?);
        Ok(String::from_utf8_lossy(self.take(length)?).into_owned())
    }

    pub fn long_string(&mut self) -> Result<&'a [u8], DecodeError> {
        let length = self.u32()? as usize;
        self.take(length)
    }

    /// Skips a field table (they are length-prefixed as a whole).
    pub fn skip_table(&mut self) -> Result<(), DecodeError> {
        let length = self.u32()? as usize;
        self.take(length).map(|_| ())
    }

    /// The (class, method) of a method frame's payload.
    pub fn method_id(&mut self) -> Result<(u16, u16), DecodeError> {
        Ok((self.u16()?, self.u16()?))
    }
}

/// The body size announced by a content header frame.
pub(crate) fn content_body_size(payload: &[u8]) -> Result<u64, DecodeError> {
    let mut reader = Reader::new(payload);
    let _class = reader.u16()?;
    let _weight = reader.u16()?;
    reader.u64()
}

/// Appends frames to an output buffer. Every method is written in place: the frame's size
/// is patched in once its payload is complete.
pub(crate) struct Writer<'a> {
    out: &'a mut BytesMut,
}

/// A frame being written: where its size field is.
pub(crate) struct OpenFrame {
    size_at: usize,
}

impl<'a> Writer<'a> {
    pub fn new(out: &'a mut BytesMut) -> Self {
        Self { out }
    }

    pub fn open(&mut self, kind: u8, channel: u16) -> OpenFrame {
        self.out.put_u8(kind);
        self.out.put_u16(channel);
        let size_at = self.out.len();
        self.out.put_u32(0);
        OpenFrame { size_at }
    }

    pub fn close(&mut self, frame: OpenFrame) {
        let size = self.out.len() - frame.size_at - 4;
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        self.out[frame.size_at..frame.size_at + 4].copy_from_slice(&size.to_be_bytes());
        self.out.put_u8(FRAME_END);
    }

    /// Opens a method frame and writes its class and method ids.
    pub fn method(&mut self, channel: u16, (class, method): (u16, u16)) -> OpenFrame {
        let frame = self.open(FRAME_METHOD, channel);
        self.out.put_u16(class);
        self.out.put_u16(method);
        frame
    }

    pub fn u8(&mut self, value: u8) -> &mut Self {
        self.out.put_u8(value);
        self
    }

    pub fn u16(&mut self, value: u16) -> &mut Self {
        self.out.put_u16(value);
        self
    }

    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.out.put_u32(value);
        self
    }

    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.out.put_u64(value);
        self
    }

    /// A short string: at most 255 bytes (longer names are refused by the caller).
    pub fn short_string(&mut self, value: &str) -> &mut Self {
        let bytes = value.as_bytes();
        let length = bytes.len().min(255);
        self.out.put_u8(length as u8);
        self.out.put_slice(&bytes[..length]);
        self
    }

    pub fn long_string(&mut self, value: &[u8]) -> &mut Self {
        self.out
            .put_u32(u32::try_from(value.len()).unwrap_or(u32::MAX));
        self.out.put_slice(value);
        self
    }

    /// A field table of string values (`S` entries).
    pub fn string_table<'t>(
        &mut self,
        entries: impl IntoIterator<Item = (&'t str, &'t [u8])>,
    ) -> &mut Self {
        let length_at = self.out.len();
        self.out.put_u32(0);
        for (name, value) in entries {
            self.short_string(name);
            self.out.put_u8(b'S');
            self.long_string(value);
        }
        let length = u32::try_from(self.out.len() - length_at - 4).unwrap_or(u32::MAX);
        self.out[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
        self
    }

    /// Appends raw bytes (an already encoded field table).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.put_slice(bytes);
        self
    }

    /// A whole method frame with no arguments beyond those `fill` writes.
    pub fn whole_method(&mut self, channel: u16, id: (u16, u16), fill: impl FnOnce(&mut Self)) {
        let frame = self.method(channel, id);
        fill(self);
        self.close(frame);
    }

    pub fn heartbeat(&mut self) {
        let frame = self.open(FRAME_HEARTBEAT, 0);
        self.close(frame);
    }
}

/// The properties of a published message that this publisher sets (the others stay unset).
#[derive(Debug, Clone, Copy, Default)]
pub struct Properties<'a> {
    pub content_type: Option<&'a str>,
    pub headers: &'a [(String, String)],
    pub delivery_mode: Option<u8>,
    pub message_id: Option<&'a str>,
    pub timestamp: Option<u64>,
}

/// Property flag bits of the basic class (AMQP 0-9-1 §4.2.6.1), highest first.
const FLAG_CONTENT_TYPE: u16 = 1 << 15;
const FLAG_HEADERS: u16 = 1 << 13;
const FLAG_DELIVERY_MODE: u16 = 1 << 12;
const FLAG_MESSAGE_ID: u16 = 1 << 7;
const FLAG_TIMESTAMP: u16 = 1 << 6;

/// What a publish writes: `basic.publish`, its content header and its body frames.
pub(crate) struct Publish<'a> {
    pub channel: u16,
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub mandatory: bool,
    pub properties: Properties<'a>,
    pub body: &'a [u8],
}

impl Publish<'_> {
    /// Writes the frames; bodies longer than a frame are split at `frame_max`.
    pub fn write(&self, writer: &mut Writer<'_>, frame_max: u32) {
        let frame = writer.method(self.channel, method::BASIC_PUBLISH);
        writer
            .u16(0)
            .short_string(self.exchange)
            .short_string(self.routing_key)
            .u8(u8::from(self.mandatory));
        writer.close(frame);

        let properties = &self.properties;
        let mut flags = 0u16;
        if properties.content_type.is_some() {
            flags |= FLAG_CONTENT_TYPE;
        }
        if !properties.headers.is_empty() {
            flags |= FLAG_HEADERS;
        }
        if properties.delivery_mode.is_some() {
            flags |= FLAG_DELIVERY_MODE;
        }
        if properties.message_id.is_some() {
            flags |= FLAG_MESSAGE_ID;
        }
        if properties.timestamp.is_some() {
            flags |= FLAG_TIMESTAMP;
        }
        let frame = writer.open(FRAME_HEADER, self.channel);
        writer
            .u16(CLASS_BASIC)
            .u16(0)
            .u64(self.body.len() as u64)
            .u16(flags);
        if let Some(content_type) = properties.content_type {
            writer.short_string(content_type);
        }
        if !properties.headers.is_empty() {
            writer.string_table(
                properties
                    .headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_bytes())),
            );
        }
        if let Some(mode) = properties.delivery_mode {
            writer.u8(mode);
        }
        if let Some(message_id) = properties.message_id {
            writer.short_string(message_id);
        }
        if let Some(timestamp) = properties.timestamp {
            writer.u64(timestamp);
        }
        writer.close(frame);

        let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
        for part in self.body.chunks(chunk) {
            let frame = writer.open(FRAME_BODY, self.channel);
            writer.raw(part);
            writer.close(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(mut bytes: BytesMut) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = take_frame(&mut bytes, 131_072).unwrap() {
            frames.push(frame);
        }
        assert!(bytes.is_empty(), "bytes left over: {bytes:?}");
        frames
    }

    #[test]
    fn a_publish_is_a_method_a_header_and_body_frames_split_at_frame_max() {
        let mut out = BytesMut::new();
        let headers = vec![("id".to_owned(), "e-1".to_owned())];
        let body = vec![7u8; 10_000];
        Publish {
            channel: 1,
            exchange: "order.events",
            routing_key: "OrderCreated",
            mandatory: true,
            properties: Properties {
                content_type: Some("application/json"),
                headers: &headers,
                delivery_mode: Some(2),
                message_id: Some("e-1"),
                timestamp: Some(1_700_000_000),
            },
            body: &body,
        }
        .write(&mut Writer::new(&mut out), 4096);
        let frames = frames(out);
        assert_eq!(frames.len(), 2 + 3, "10,000 bytes in frames of 4,088");
        assert_eq!(frames[0].kind, FRAME_METHOD);
        let mut method = Reader::new(&frames[0].payload);
        assert_eq!(method.method_id().unwrap(), method::BASIC_PUBLISH);
        assert_eq!(method.u16().unwrap(), 0);
        assert_eq!(method.short_string().unwrap(), "order.events");
        assert_eq!(method.short_string().unwrap(), "OrderCreated");
        assert_eq!(method.u8().unwrap(), 1, "mandatory bit");

        assert_eq!(frames[1].kind, FRAME_HEADER);
        assert_eq!(content_body_size(&frames[1].payload).unwrap(), 10_000);
        let mut header = Reader::new(&frames[1].payload[12..]);
        let flags = header.u16().unwrap();
        assert_eq!(
            flags,
            FLAG_CONTENT_TYPE
                | FLAG_HEADERS
                | FLAG_DELIVERY_MODE
                | FLAG_MESSAGE_ID
                | FLAG_TIMESTAMP
        );
        assert_eq!(header.short_string().unwrap(), "application/json");
        let table = header.long_string().unwrap();
        let mut entries = Reader::new(table);
        assert_eq!(entries.short_string().unwrap(), "id");
        assert_eq!(entries.u8().unwrap(), b'S');
        assert_eq!(entries.long_string().unwrap(), b"e-1");
        assert_eq!(header.u8().unwrap(), 2);
        assert_eq!(header.short_string().unwrap(), "e-1");
        assert_eq!(header.u64().unwrap(), 1_700_000_000);

        let body_back: Vec<u8> = frames[2..]
            .iter()
            .flat_map(|frame| frame.payload.iter().copied())
            .collect();
        assert_eq!(body_back, body);
        assert!(frames[2..].iter().all(|frame| frame.payload.len() <= 4088));
    }

    #[test]
    fn debezium_properties_are_delivery_mode_and_headers_only() {
        let mut out = BytesMut::new();
        let headers = vec![("id".to_owned(), "e-1".to_owned())];
        Publish {
            channel: 1,
            exchange: "x",
            routing_key: "k",
            mandatory: true,
            properties: Properties {
                headers: &headers,
                delivery_mode: Some(2),
                ..Properties::default()
            },
            body: b"{}",
        }
        .write(&mut Writer::new(&mut out), 131_072);
        let frames = frames(out);
        let flags = u16::from_be_bytes([frames[1].payload[12], frames[1].payload[13]]);
        assert_eq!(flags, FLAG_HEADERS | FLAG_DELIVERY_MODE);
    }

    #[test]
    fn a_partial_frame_waits_for_the_rest() {
        let mut out = BytesMut::new();
        Writer::new(&mut out).heartbeat();
        let whole = out.clone();
        let mut partial = BytesMut::from(&whole[..5]);
        assert_eq!(take_frame(&mut partial, 131_072).unwrap(), None);
        partial.extend_from_slice(&whole[5..]);
        let frame = take_frame(&mut partial, 131_072).unwrap().unwrap();
        assert_eq!(frame.kind, FRAME_HEARTBEAT);
        assert!(partial.is_empty());
    }

    #[test]
    fn a_frame_without_its_end_octet_is_an_error_not_a_panic() {
        let mut bytes = BytesMut::from(&[1u8, 0, 1, 0, 0, 0, 1, 9, 0x00][..]);
        assert!(take_frame(&mut bytes, 131_072).is_err());
        let mut oversized = BytesMut::from(&[1u8, 0, 1, 0x7f, 0, 0, 0][..]);
        assert!(take_frame(&mut oversized, 131_072).is_err());
    }

    #[test]
    fn truncated_methods_are_errors() {
        let mut reader = Reader::new(&[0, 60, 0]);
        assert!(reader.method_id().is_err());
        let mut reader = Reader::new(&[5, b'a']);
        assert!(reader.short_string().is_err());
    }
}
