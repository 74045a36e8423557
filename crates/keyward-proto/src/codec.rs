//! The protobuf codec of `keyward.v1` (named in `build.rs`): prost's, except
//! that a message that does not decode is the caller's mistake,
//! INVALID_ARGUMENT naming the field where prost says it failed (invalid
//! UTF-8 in `credential`, a truncated varint in `rate_limit.requests`),
//! rather than tonic's INTERNAL "failed to decode Protobuf message", which
//! would read as a server fault.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstDecoder, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt};

/// INVALID_ARGUMENT naming the field, with `google.rpc.BadRequest` details.
/// The one spelling of a bad-field error, used by the server for every field.
pub fn invalid_argument(field: &str, reason: impl std::fmt::Display) -> Status {
    let reason = reason.to_string();
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {reason}"),
        ErrorDetails::with_bad_request_violation(field, reason),
    )
}

/// `T` out, `U` in; see the module doc.
#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder(PhantomData)
    }
}

/// Decodes a `U`; a failure is INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct ProtoDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|error| undecodable(short_type_name::<U>(), &error))
    }

    fn buffer_settings(&self) -> BufferSettings {
        ProstDecoder::<U>::default().buffer_settings()
    }
}

/// `AuthenticateRequest` of `keyward::proto::keyward::v1::AuthenticateRequest`.
fn short_type_name<U>() -> &'static str {
    let full = std::any::type_name::<U>();
    full.rsplit("::").next().unwrap_or(full)
}

/// INVALID_ARGUMENT for a message that does not decode, naming the field
/// prost was in (as `rate_limit.requests`), or `request` when the message
/// itself is garbage.
pub fn undecodable(message: &str, error: &prost::DecodeError) -> Status {
    let (field, problem) = field_and_problem(error);
    invalid_argument(
        field.as_deref().unwrap_or("request"),
        format!("not a valid {message}: {problem}"),
    )
}

/// The field path and the problem, from prost's message:
/// `failed to decode Protobuf message: RateLimit.requests: CreateKeyRequest.rate_limit: invalid varint`
/// (innermost field first) gives `rate_limit.requests` and `invalid varint`.
pub fn field_and_problem(error: &prost::DecodeError) -> (Option<String>, String) {
    let text = error.to_string();
    let mut rest = text
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(&text);
    let mut fields = Vec::new();
    while let Some((segment, after)) = rest.split_once(": ") {
        match segment.split_once('.') {
            Some((message, field))
                if !message.is_empty()
                    && !field.is_empty()
                    && segment
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') =>
            {
                fields.push(field);
                rest = after;
            }
            _ => break,
        }
    }
    fields.reverse();
    let field = (!fields.is_empty()).then(|| fields.join("."));
    (field, rest.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate as proto;

    #[test]
    fn a_bad_string_names_its_field() {
        // Field 1 (credential), length 2, bytes that are not UTF-8.
        let bytes = [0x0a, 0x02, 0xc3, 0x28];
        let error = proto::AuthenticateRequest::decode(&bytes[..]).unwrap_err();
        let (field, problem) = field_and_problem(&error);
        assert_eq!(field.as_deref(), Some("credential"));
        assert!(problem.contains("UTF-8"), "{problem}");
        let status = undecodable("AuthenticateRequest", &error);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("credential: not a valid AuthenticateRequest"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_nested_field_is_named_by_its_path() {
        // CreateKeyRequest.rate_limit (6) holding requests (1) with a
        // varint that never ends.
        let bytes = [0x32, 0x02, 0x08, 0xff];
        let error = proto::CreateKeyRequest::decode(&bytes[..]).unwrap_err();
        assert_eq!(
            field_and_problem(&error).0.as_deref(),
            Some("rate_limit.requests")
        );
    }

    #[test]
    fn garbage_without_a_field_is_the_request() {
        // Wire type 7 does not exist.
        let bytes = [0x0f];
        let error = proto::AuthenticateRequest::decode(&bytes[..]).unwrap_err();
        let (field, _) = field_and_problem(&error);
        assert_eq!(field, None);
        assert!(
            undecodable("AuthenticateRequest", &error)
                .message()
                .starts_with("request: ")
        );
    }
}
