//! The emails Nimbus sends, as plain text plus a simple HTML alternative.
//!
//! Every value is inserted as given into the text and HTML-escaped into the HTML, and
//! control characters are blanked in subjects, so a project, team or user name cannot
//! break a header or the markup. Links arrive complete: the caller puts `userId`,
//! `secret` and whatever else belongs in them; templates never build or alter URLs.

use super::OutgoingMail;

/// A rendered email, ready to be addressed with [`MailContent::to`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailContent {
    /// One line, control characters blanked.
    pub subject: String,
    /// The plain-text body; links stand alone on their lines.
    pub text: String,
    /// A small self-contained HTML page with the same content.
    pub html: String,
}

impl MailContent {
    /// Addresses the email to `recipient`.
    pub fn to(self, recipient: impl Into<String>) -> OutgoingMail {
        OutgoingMail {
            to: recipient.into(),
            subject: self.subject,
            text: self.text,
            html: Some(self.html),
        }
    }
}

/// Asks a user to confirm their address by opening `link`.
pub fn verification(project: &str, link: &str) -> MailContent {
    compose(
        format!("Verify your email for {project}"),
        project,
        &[
            Block::Para(format!(
                "Please confirm that this is your email address for {project}."
            )),
            Block::Button {
                label: "Verify email",
                link,
            },
            Block::Para(IGNORE_UNLESS_YOU.into()),
        ],
    )
}

/// Sends the link that lets a user choose a new password.
pub fn password_recovery(project: &str, link: &str) -> MailContent {
    compose(
        format!("Reset your {project} password"),
        project,
        &[
            Block::Para(format!(
                "Someone asked to reset the password of your {project} account."
            )),
            Block::Button {
                label: "Choose a new password",
                link,
            },
            Block::Para(format!(
                "{IGNORE_UNLESS_YOU} Your password stays as it is until you choose a new one."
            )),
        ],
    )
}

/// Sends a one-click sign-in link.
pub fn magic_url(project: &str, link: &str) -> MailContent {
    compose(
        format!("Sign in to {project}"),
        project,
        &[
            Block::Para(format!("Open this link to sign in to {project}.")),
            Block::Button {
                label: "Sign in",
                link,
            },
            Block::Para(IGNORE_UNLESS_YOU.into()),
        ],
    )
}

/// Sends a one-time sign-in code. `phrase`, when given, is the security phrase the
/// sign-in screen also shows, so the user can tell this email belongs to their attempt.
pub fn email_otp(project: &str, code: &str, phrase: Option<&str>) -> MailContent {
    let mut blocks = vec![
        Block::Para(format!("Enter this code to sign in to {project}:")),
        Block::Code(code),
    ];
    if let Some(phrase) = phrase {
        blocks.push(Block::Para(format!(
            "Security phrase: {phrase}. Use the code only if the sign-in screen shows the same phrase."
        )));
    }
    blocks.push(Block::Para(format!(
        "{IGNORE_UNLESS_YOU} Never share this code with anyone."
    )));
    compose(format!("Your {project} sign-in code"), project, &blocks)
}

/// Invites someone into a team; `link` accepts the invitation.
pub fn team_invitation(project: &str, team: &str, inviter: &str, link: &str) -> MailContent {
    compose(
        format!("{inviter} invited you to join {team} on {project}"),
        project,
        &[
            Block::Para(format!(
                "{inviter} invited you to join the team {team} on {project}."
            )),
            Block::Button {
                label: "Accept the invitation",
                link,
            },
            Block::Para(
                "If you don't know the sender or don't want to join, ignore this email.".into(),
            ),
        ],
    )
}

const IGNORE_UNLESS_YOU: &str = "If you didn't ask for this, you can ignore this email.";

/// One piece of an email, rendered both ways by [`compose`].
enum Block<'a> {
    /// A paragraph of plain text.
    Para(String),
    /// A call to action: a button in HTML, the bare link on its own line in text.
    Button { label: &'a str, link: &'a str },
    /// A short code, shown large.
    Code(&'a str),
}

fn compose(subject: String, project: &str, blocks: &[Block<'_>]) -> MailContent {
    let mut text = Vec::with_capacity(blocks.len() + 1);
    let mut body = String::new();
    for block in blocks {
        match block {
            Block::Para(para) => {
                text.push(para.clone());
                body.push_str(&format!(
                    "<p style=\"margin:0 0 16px\">{}</p>\n",
                    escape(para)
                ));
            }
            Block::Button { label, link } => {
                // A link alone on its line survives every mail client's wrapping.
                text.push(format!("{label}:\n{link}"));
                let (label, link) = (escape(label), escape(link));
                body.push_str(&format!(
                    "<p style=\"margin:24px 0\"><a href=\"{link}\" style=\"background:#2563eb;\
                     color:#ffffff;padding:12px 20px;border-radius:6px;text-decoration:none;\
                     display:inline-block\">{label}</a></p>\n\
                     <p style=\"margin:0 0 16px;font-size:13px;color:#555555\">If the button \
                     does not work, open this link:<br><a href=\"{link}\" style=\"color:#2563eb;\
                     word-break:break-all\">{link}</a></p>\n"
                ));
            }
            Block::Code(code) => {
                text.push(code.to_string());
                body.push_str(&format!(
                    "<p style=\"margin:24px 0;font-size:28px;font-weight:bold;\
                     letter-spacing:6px;font-family:monospace\">{}</p>\n",
                    escape(code)
                ));
            }
        }
    }
    text.push(format!("— {project}"));
    let subject = one_line(&subject);
    let html = format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n\
         </head>\n<body style=\"margin:0;padding:24px;background:#f4f4f5\">\n\
         <div style=\"max-width:560px;margin:0 auto;padding:32px;background:#ffffff;\
         border-radius:8px;font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;\
         font-size:15px;line-height:1.5;color:#18181b\">\n\
         {body}<p style=\"margin:24px 0 0;color:#71717a\">— {project}</p>\n</div>\n</body>\n</html>\n",
        title = escape(&subject),
        project = escape(project),
    );
    MailContent {
        subject,
        text: text.join("\n\n") + "\n",
        html,
    }
}

/// Escapes text for HTML content and quoted attribute values.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A subject is one header line: names with line breaks or other control characters
/// get spaces instead of being refused, since the name's owner is not the one sending.
fn one_line(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINK: &str = "https://app.example.com/verify?userId=u1&secret=s3cr3t";

    fn all(project: &str, value: &str, link: &str) -> Vec<MailContent> {
        vec![
            verification(project, link),
            password_recovery(project, link),
            magic_url(project, link),
            email_otp(project, value, Some(value)),
            team_invitation(project, value, value, link),
        ]
    }

    #[test]
    fn templates_escape_every_value_in_html() {
        let evil = "<script>alert('x')</script>";
        let evil_link = "https://x.example/?a=\"><script>alert(1)</script>";
        for mail in all(evil, evil, evil_link) {
            assert!(!mail.html.contains("<script>"), "{}", mail.html);
            assert!(
                mail.html
                    .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
                "{}",
                mail.html
            );
            // The text part is not markup: values go in as they are.
            assert!(mail.text.contains(evil), "{}", mail.text);
        }
        for mail in all("Acme", "123456", evil_link) {
            if mail.text.contains("https://") {
                assert!(mail.html.contains(
                    "href=\"https://x.example/?a=&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""
                ));
            }
        }
    }

    #[test]
    fn links_are_kept_whole_in_text_and_escaped_in_html() {
        for mail in [
            verification("Acme", LINK),
            password_recovery("Acme", LINK),
            magic_url("Acme", LINK),
            team_invitation("Acme", "Core", "Ada", LINK),
        ] {
            assert!(mail.text.lines().any(|line| line == LINK), "{}", mail.text);
            assert!(
                mail.html.contains(
                    "href=\"https://app.example.com/verify?userId=u1&amp;secret=s3cr3t\""
                ),
                "{}",
                mail.html
            );
        }
    }

    #[test]
    fn subjects_name_the_project_on_one_line() {
        assert_eq!(
            verification("Acme", LINK).subject,
            "Verify your email for Acme"
        );
        assert_eq!(
            team_invitation("Acme", "Core\r\nBcc: eve@example.com", "Ada", LINK).subject,
            "Ada invited you to join Core  Bcc: eve@example.com on Acme"
        );
        for mail in all("Ac\nme", "x\r\ny", LINK) {
            assert!(!mail.subject.contains(['\r', '\n']), "{:?}", mail.subject);
        }
    }

    #[test]
    fn otp_shows_the_code_and_the_phrase() {
        let mail = email_otp("Acme", "042917", Some("brave purple otter"));
        assert!(
            mail.text.lines().any(|line| line == "042917"),
            "{}",
            mail.text
        );
        assert!(mail.text.contains("brave purple otter"));
        assert!(mail.html.contains(">042917</p>"));
        assert!(
            !mail.subject.contains("042917"),
            "codes stay out of notifications"
        );
        let without = email_otp("Acme", "042917", None);
        assert!(!without.text.contains("Security phrase"));
    }

    #[test]
    fn invitation_names_team_and_inviter() {
        let mail = team_invitation("Acme", "Core & Friends", "Ada Lovelace", LINK);
        assert!(
            mail.text
                .contains("Ada Lovelace invited you to join the team Core & Friends on Acme.")
        );
        assert!(mail.html.contains("Core &amp; Friends"));
        let addressed = mail.clone().to("bob@example.com");
        assert_eq!(addressed.to, "bob@example.com");
        assert_eq!(addressed.html.as_deref(), Some(mail.html.as_str()));
    }
}
