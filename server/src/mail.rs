//! Outgoing mail over SMTP (`CONVO_SMTP_URL`).

use lettre::message::{Body, Mailbox};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid CONVO_SMTP_URL: {0}")]
    Url(String),
    #[error("invalid sender address {0:?}")]
    From(String),
    #[error("invalid recipient address")]
    To,
    #[error("could not build the message: {0}")]
    Build(String),
    #[error("SMTP delivery failed: {0}")]
    Smtp(String),
}

/// Sends the server's mail; without an SMTP URL it sends nothing and says so in the log.
#[derive(Clone)]
pub struct Mailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(smtp_url: Option<&str>, from: &str) -> Result<Self, MailError> {
        let from: Mailbox = from
            .parse()
            .map_err(|_| MailError::From(from.to_string()))?;
        let transport = match smtp_url {
            None => None,
            Some(url) => Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| MailError::Url(e.to_string()))?
                    .timeout(Some(std::time::Duration::from_secs(20)))
                    .build(),
            ),
        };
        Ok(Mailer { transport, from })
    }

    pub fn is_configured(&self) -> bool {
        self.transport.is_some()
    }

    /// The password-reset mail: a single-use link, valid for `minutes`.
    pub async fn send_password_reset(
        &self,
        to: &str,
        link: &str,
        code: &str,
        minutes: u64,
    ) -> Result<(), MailError> {
        let text = format!(
            "Someone asked to reset the password of your ConvoConnect account.\r\n\
             \r\n\
             To choose a new password, open this link within {minutes} minutes:\r\n\
             \r\n\
             {link}\r\n\
             \r\n\
             or paste this code into the ConvoConnect app:\r\n\
             \r\n\
             {code}\r\n\
             \r\n\
             The link works once. If you did not ask for this, ignore this mail:\r\n\
             your password stays as it is.\r\n"
        );
        self.send(to, "Reset your ConvoConnect password", text)
            .await
    }

    async fn send(&self, to: &str, subject: &str, text: String) -> Result<(), MailError> {
        let Some(transport) = &self.transport else {
            tracing::warn!("no CONVO_SMTP_URL configured: mail not sent");
            return Ok(());
        };
        let to: Mailbox = to.parse().map_err(|_| MailError::To)?;
        // lettre picks 7bit or quoted-printable as the line lengths require.
        let body = Body::new(text);
        let msg = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| MailError::Build(e.to_string()))?;
        transport
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| MailError::Smtp(e.to_string()))
    }
}
