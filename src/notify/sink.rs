//! Where a sink's URL comes from: the key `url` of the Secret named after the sink, in the
//! install namespace. Read at each delivery, so a rotated URL is used at once.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

/// The Secret key that holds a sink's URL.
pub const URL_KEY: &str = "url";

/// The URL of `sink`, read from its Secret through `secrets` (the install namespace's, named
/// `namespace` in messages). A missing Secret or key is an error the delivery records and
/// retries, so the sink works as soon as someone creates it.
pub async fn read_sink_url(
    secrets: &Api<Secret>,
    namespace: &str,
    sink: &str,
) -> Result<String, String> {
    match secrets.get_opt(sink).await {
        Ok(Some(secret)) => url_from_secret(&secret, namespace, sink),
        Ok(None) => Err(format!("Secret {namespace}/{sink} not found")),
        Err(error) => Err(format!("reading Secret {namespace}/{sink}: {error}")),
    }
}

/// The URL under the key `url` of a sink's Secret, without surrounding whitespace (a
/// trailing newline from `--from-file` is common).
pub fn url_from_secret(secret: &Secret, namespace: &str, sink: &str) -> Result<String, String> {
    let value = match secret.data.as_ref().and_then(|data| data.get(URL_KEY)) {
        Some(bytes) => String::from_utf8(bytes.0.clone())
            .map_err(|_| format!("Secret {namespace}/{sink}: key {URL_KEY} is not UTF-8 text"))?,
        None => secret
            .string_data
            .as_ref()
            .and_then(|data| data.get(URL_KEY))
            .cloned()
            .ok_or_else(|| format!("Secret {namespace}/{sink} has no key {URL_KEY}"))?,
    };
    let url = value.trim();
    if url.is_empty() {
        return Err(format!("Secret {namespace}/{sink}: key {URL_KEY} is empty"));
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(key: &str, value: &[u8]) -> Secret {
        Secret {
            data: Some([(key.to_string(), ByteString(value.to_vec()))].into()),
            ..Secret::default()
        }
    }

    #[test]
    fn the_url_is_the_trimmed_value_of_the_url_key() {
        let read = |s: &Secret| url_from_secret(s, "countersign-system", "slack-leads");
        assert_eq!(
            read(&secret("url", b"https://hooks.example/T1/B2/x\n")),
            Ok("https://hooks.example/T1/B2/x".to_string())
        );
        assert_eq!(
            read(&secret("webhook", b"https://hooks.example/")),
            Err("Secret countersign-system/slack-leads has no key url".to_string())
        );
        assert_eq!(
            read(&secret("url", b" \n")),
            Err("Secret countersign-system/slack-leads: key url is empty".to_string())
        );
        assert_eq!(
            read(&secret("url", &[0xff, 0xfe])),
            Err("Secret countersign-system/slack-leads: key url is not UTF-8 text".to_string())
        );
    }
}
