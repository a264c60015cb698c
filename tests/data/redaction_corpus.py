"""Labelled examples for every detector: realistic text with the values it must find, and text it must leave alone.

Secret-shaped values are assembled from pieces so no literal credential sits in the
repository for secret scanners to flag; private keys are generated when this loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


@dataclass(frozen=True)
class Positive:
    text: str
    values: tuple[str, ...]


def _pem(key: object, fmt: serialization.PrivateFormat, password: bytes | None = None) -> str:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption).decode().strip()  # type: ignore[attr-defined]


RSA_PEM = _pem(rsa.generate_private_key(65537, 1024), serialization.PrivateFormat.TraditionalOpenSSL)
PKCS8_PEM = _pem(ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.PKCS8)
OPENSSH_PEM = _pem(ed25519.Ed25519PrivateKey.generate(), serialization.PrivateFormat.OpenSSH)
ENCRYPTED_PEM = _pem(
    rsa.generate_private_key(65537, 1024), serialization.PrivateFormat.TraditionalOpenSSL, b"correct horse"
)

OPENAI_LEGACY = "sk-" + "T3BlbkFJ" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0"
OPENAI_PROJECT = (
    "sk-" + "proj-" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe_" + "T3BlbkFJ" + "-Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0Uv"
)
ANTHROPIC = "sk-" + "ant-api03-" + "q1W2e3R4t5Y6u7I8o9P0a1S2d3F4g5H6j7K8l9Z0x1C2v3B4n5M6" + "-Qw3Er4Ty5AA"
AWS_ID = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_ID_SESSION = "ASIA" + "Y34FZKBOKMUTVV7A"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY"
GITHUB_CLASSIC = "ghp" + "_" + "16C7e42F292c6912E7710c838347Ae178B4a"
GITHUB_FINE = "github" + "_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789abcdefghijklmnopq"
GITHUB_OAUTH = "gho" + "_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
SLACK_BOT = "xoxb" + "-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_USER = "xoxp" + "-123456789012-123456789012-123456789012-0123456789abcdef0123456789abcdef"
STRIPE_LIVE = "sk" + "_live_" + "51Hx2K3LmNoPqRsTuVwXyZ0123456789"
STRIPE_RESTRICTED = "rk" + "_test_" + "4eC39HqLyjWDarjtT1zdp7dc"
STRIPE_WEBHOOK = "whsec" + "_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
JWT_RS = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0"
    ".eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbSIsImF1ZCI6ImFwaSIsImV4cCI6MTkwMDAwMDAwMH0"
    ".dGhpcy1pcy1ub3QtYS1yZWFsLXNpZ25hdHVyZS1idXQtaXQtaXMtbG9uZw"
)

POSITIVE: dict[str, list[Positive]] = {
    "email": [
        Positive("Please reach out to john.doe@acmecorp.com for the invoice.", ("john.doe@acmecorp.com",)),
        Positive(
            "Contact: Jane <jane_smith+billing@sub.mail.example.co.uk>", ("jane_smith+billing@sub.mail.example.co.uk",)
        ),
        Positive("Send it to ops@corp.io, then cc legal@corp.io.", ("ops@corp.io", "legal@corp.io")),
        Positive('user: {"email": "a.b-c@d-e.org"}', ("a.b-c@d-e.org",)),
        Positive("Reply-To: support@helpdesk.initech.net\nSubject: refund", ("support@helpdesk.initech.net",)),
        Positive("Her address (maria.garcia@uni.edu.es) is on file.", ("maria.garcia@uni.edu.es",)),
        Positive("mailto:x1@y2.travel", ("x1@y2.travel",)),
        Positive("Email JOHN.DOE@GLOBEX.COM now", ("JOHN.DOE@GLOBEX.COM",)),
    ],
    "phone": [
        Positive("Call me at +1 415 555 0132 after 5pm.", ("+1 415 555 0132",)),
        Positive("Our London office: +44 20 7946 0958.", ("+44 20 7946 0958",)),
        Positive("Support line (415) 555-0132, weekdays.", ("(415) 555-0132",)),
        Positive("Mobile: 415-555-0199", ("415-555-0199",)),
        Positive("Fax 212.555.0147 is no longer in use", ("212.555.0147",)),
        Positive("Berlin: +49 30 901820, Paris: +33 1 23 45 67 89", ("+49 30 901820", "+33 1 23 45 67 89")),
        Positive("Tokyo desk +81 3-1234-5678", ("+81 3-1234-5678",)),
        Positive("WhatsApp +91 98765 43210 anytime", ("+91 98765 43210",)),
        Positive("US number +1 (650) 253-0000.", ("+1 (650) 253-0000",)),
    ],
    "ssn": [
        Positive("SSN: 536-22-1234 on the W-2 form.", ("536-22-1234",)),
        Positive("The applicant's social security number is 219 09 9999.", ("219 09 9999",)),
        Positive("ssn=078-05-1120", ("078-05-1120",)),
        Positive("Records show 123-45-6789 and 401-55-0001.", ("123-45-6789", "401-55-0001")),
    ],
    "credit_card": [
        Positive("Charge card 4111 1111 1111 1111 exp 12/28.", ("4111 1111 1111 1111",)),
        Positive("Mastercard: 5555-5555-5555-4444", ("5555-5555-5555-4444",)),
        Positive("Amex 3782 822463 10005 was declined.", ("3782 822463 10005",)),
        Positive("card_number=4012888888881881;", ("4012888888881881",)),
        Positive("Discover 6011111111111117, JCB 3530 1113 3330 0000", ("6011111111111117", "3530 1113 3330 0000")),
        Positive("new 2-series MC 2223 0031 2200 3222", ("2223 0031 2200 3222",)),
        Positive('{"pan": "4000056655665556"}', ("4000056655665556",)),
        Positive("Amex no spaces 371449635398431.", ("371449635398431",)),
    ],
    "iban": [
        Positive("Wire to IBAN DE89 3704 0044 0532 0130 00 by Friday.", ("DE89 3704 0044 0532 0130 00",)),
        Positive("UK account GB29NWBK60161331926819", ("GB29NWBK60161331926819",)),
        Positive("FR14 2004 1010 0505 0001 3M02 606 (Societe Generale)", ("FR14 2004 1010 0505 0001 3M02 606",)),
        Positive(
            "Dutch: NL91ABNA0417164300, Spanish: ES91 2100 0418 4502 0005 1332.",
            ("NL91ABNA0417164300", "ES91 2100 0418 4502 0005 1332"),
        ),
        Positive("iban: CH93 0076 2011 6238 5295 7", ("CH93 0076 2011 6238 5295 7",)),
    ],
    "ipv4": [
        Positive("The database listens on 192.168.1.10:5432.", ("192.168.1.10",)),
        Positive("DNS servers 8.8.8.8 and 9.9.9.9.", ("8.8.8.8", "9.9.9.9")),
        Positive("ssh admin@10.0.0.254 -p 22", ("10.0.0.254",)),
        Positive("allow from 172.16.254.1/32", ("172.16.254.1",)),
    ],
    "ipv6": [
        Positive("Ping 2a00:1450:4001::1 to test.", ("2a00:1450:4001::1",)),
        Positive("link-local fe80::1ff:fe23:4567:890a on eth0", ("fe80::1ff:fe23:4567:890a",)),
        Positive("full form 2607:f8b0:85a3:0000:0000:8a2e:0370:7334.", ("2607:f8b0:85a3:0000:0000:8a2e:0370:7334",)),
        Positive("mapped ::ffff:192.168.1.1 address", ("::ffff:192.168.1.1",)),
    ],
    "openai_key": [
        Positive(f"export OPENAI_API_KEY={OPENAI_PROJECT}", (OPENAI_PROJECT,)),
        Positive(f"Use the key {OPENAI_LEGACY} in the header.", (OPENAI_LEGACY,)),
        Positive(f'client = OpenAI(api_key="{OPENAI_LEGACY}")', (OPENAI_LEGACY,)),
    ],
    "anthropic_key": [
        Positive(f"ANTHROPIC_API_KEY={ANTHROPIC}", (ANTHROPIC,)),
        Positive(f"the header x-api-key: {ANTHROPIC} is set", (ANTHROPIC,)),
    ],
    "aws_access_key": [
        Positive(f"aws_access_key_id = {AWS_ID}", (AWS_ID,)),
        Positive(f"Temporary creds {AWS_ID_SESSION} expire in an hour.", (AWS_ID_SESSION,)),
    ],
    "aws_secret_key": [
        Positive(f"aws_secret_access_key = {AWS_SECRET}", (AWS_SECRET,)),
        Positive(f'AWS_SECRET_ACCESS_KEY="{AWS_SECRET}"', (AWS_SECRET,)),
        Positive(f"secretAccessKey: {AWS_SECRET}", (AWS_SECRET,)),
    ],
    "github_token": [
        Positive(f"git clone https://{GITHUB_CLASSIC}@github.com/org/repo.git", (GITHUB_CLASSIC,)),
        Positive(f"GH_TOKEN={GITHUB_FINE}", (GITHUB_FINE,)),
        Positive(f"oauth token {GITHUB_OAUTH} was revoked", (GITHUB_OAUTH,)),
    ],
    "slack_token": [
        Positive(f"SLACK_BOT_TOKEN={SLACK_BOT}", (SLACK_BOT,)),
        Positive(f"legacy user token {SLACK_USER}.", (SLACK_USER,)),
    ],
    "stripe_key": [
        Positive(f"stripe.api_key = '{STRIPE_LIVE}'", (STRIPE_LIVE,)),
        Positive(f"restricted key {STRIPE_RESTRICTED} for reports", (STRIPE_RESTRICTED,)),
        Positive(f"STRIPE_WEBHOOK_SECRET={STRIPE_WEBHOOK}", (STRIPE_WEBHOOK,)),
    ],
    "jwt": [
        Positive(f"Authorization header carried {JWT} yesterday.", (JWT,)),
        Positive(f"id_token={JWT_RS}&state=xyz", (JWT_RS,)),
    ],
    "private_key": [
        Positive(f"Here is the deploy key:\n{RSA_PEM}\nKeep it safe.", (RSA_PEM,)),
        Positive(f"```\n{PKCS8_PEM}\n```", (PKCS8_PEM,)),
        Positive(f"{OPENSSH_PEM}\n", (OPENSSH_PEM,)),
        Positive(f"legacy encrypted:\n{ENCRYPTED_PEM}\nend", (ENCRYPTED_PEM,)),
        Positive("flattened: " + RSA_PEM.replace("\n", " ") + " done", (RSA_PEM.replace("\n", " "),)),
    ],
    "password": [
        Positive("DB_PASSWORD=s3cr3t-P4ss!", ("s3cr3t-P4ss!",)),
        Positive('{"username": "admin", "password": "hunter22"}', ("hunter22",)),
        Positive("password: correcthorsebatterystaple", ("correcthorsebatterystaple",)),
        Positive("api_key: 9f8e7d6c5b4a", ("9f8e7d6c5b4a",)),
        Positive("Authorization: Bearer a1b2c3d4e5f6g7h8i9j0", ("a1b2c3d4e5f6g7h8i9j0",)),
        Positive("client_secret = 'QmFzZTY0U2VjcmV0'", ("QmFzZTY0U2VjcmV0",)),
        Positive("login with pwd=Tr0ub4dor&3 today", ("Tr0ub4dor&3",)),
    ],
    "url_password": [
        Positive("DATABASE_URL=postgres://app:Zq8vR2mK9w@db.internal:5432/shop", ("Zq8vR2mK9w",)),
        Positive("redis://:s3cr3tPa55@cache:6379/0", ("s3cr3tPa55",)),
        Positive("git clone https://deploy:x7Hk29dLq@git.acmecorp.io/app.git", ("x7Hk29dLq",)),
    ],
    "cli_password": [
        Positive("curl -u admin:Tr0ub4dor3x https://ci.acmecorp.io", ("Tr0ub4dor3x",)),
        Positive("redis-cli -h cache -a Vx92kLmq7 ping", ("Vx92kLmq7",)),
        Positive("mysql -u root -pH54d1tjxgb! shop", ("H54d1tjxgb!",)),
        Positive('requests.get(url, auth=("svc", "p4ssW0rd-2024"))', ("p4ssW0rd-2024",)),
    ],
}

NEGATIVE: dict[str, list[str]] = {
    "email": [
        "Use the @decorator syntax in Python.",
        "The retina asset is icon@2x.png and logo@3x.png.",
        "Mention @alice in the channel.",
        "Install with npm i pkg@1.2.3 today.",
        "user at example dot com",
        "The price is 5@10 USD per unit.",
    ],
    "phone": [
        "Version 1.2.3 was released on 2024-01-15.",
        "The ISBN is 978-3-16-148410-0.",
        "Scores: 12 - 15 - 20 in three rounds.",
        "Use 123-456-7890 as a placeholder only.",
        "It grew +5 points to 1034.",
        "Between 10.15 and 11.30 tomorrow.",
        "Order 20240115-0001 shipped.",
        "pi is 3.14159265 approximately",
    ],
    "ssn": [
        "Invalid: 000-12-3456 and 666-12-3456 and 912-34-5678.",
        "Group zero: 123-00-4567, serial zero: 123-45-0000.",
        "A bare 123456789 is just a number.",
        "The date 2023-10-15 is not a number of that kind.",
        "Part no. 123-45-67890 in stock.",
    ],
    "credit_card": [
        "Order #4111 1111 1111 1112 failed the check.",
        "Tracking 1234567890123456 is in transit.",
        "Timestamp 1700000000123 ms since epoch.",
        "Invoice 9999-8888-7777-6666 is due.",
        "The ratio 0.4111111111111111 converges.",
        "Phone +4111111111111111 is not a card.",
        "All zeros 0000 0000 0000 0000 placeholder.",
    ],
    "iban": [
        "DE89 3704 0044 0532 0130 01 has a typo.",
        "ISO 9001 2015 certified.",
        "The code XX12 3456 7890 1234 is not a country.",
        "Model AB12CD34EF56 is discontinued.",
        "Flight LH12 3456 departs at noon.",
    ],
    "ipv4": [
        "Upgrade from version 1.2.3 to 2.0.",
        "Not an address: 999.1.1.1 or 256.256.256.256.",
        "OID 1.3.6.1.4.1 belongs to the tree.",
        "pi ~ 3.14 and e ~ 2.71",
        "section 4.2.1 explains it",
    ],
    "ipv6": [
        "The meeting is at 12:30:45 UTC.",
        "Use std::vector and std::map.",
        "MAC 00:1A:2B:3C:4D:5E belongs to the printer.",
        "Ratio 16:9 and 4:3 screens.",
        "The :: operator in C++.",
        "Bible verse John 3:16.",
    ],
    "openai_key": [
        "We used sk-learn for the model.",
        "A risk-free investment of sk-this-is-not-a-real-key-example.",
        "The prefix sk- marks secret keys.",
        "task-1234567890 is done",
    ],
    "anthropic_key": [
        "Keys start with sk-ant- followed by random text.",
        "sk-ant-short is too short",
    ],
    "aws_access_key": [
        "AKIA is the prefix of long-term keys.",
        "The id AKIAIOSFODNN7EXAMP is truncated.",
        "lowercase akiaiosfodnn7example is not one",
    ],
    "aws_secret_key": [
        "Store the secret key in a vault, never in code.",
        "aws_secret_access_key = ${AWS_SECRET_ACCESS_KEY}",
        "secret_key: tooshort",
    ],
    "github_token": [
        "Run git push origin ghp_branch.",
        "ghp_ tokens are 40 characters long.",
        "github_pat_ is the prefix of fine-grained tokens.",
    ],
    "slack_token": [
        "xoxo, see you tomorrow!",
        "The prefixes are xoxb- and xoxp-.",
        "xoxb-short",
    ],
    "stripe_key": [
        "Publishable keys like pk_live_1234567890abcdef are public.",
        "sk_live_ keys must stay on the server.",
        "The env var is STRIPE_SECRET_KEY.",
    ],
    "jwt": [
        "A JWT starts with eyJ and has three parts.",
        "Not a JWT: eyJmb28iOiJiYXIifQ.eyJ4IjoxfQ.c2lnbmF0dXJl",
        "eyJhbGciOi is only the start of a header.",
    ],
    "private_key": [
        "The file starts with -----BEGIN PRIVATE KEY----- and ends with -----END PRIVATE KEY-----.",
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUE\n-----END CERTIFICATE-----",
    ],
    "password": [
        "Your password is strong enough.",
        "Password: <your password here>",
        "password=${DB_PASSWORD}",
        "Reset your password: click the link below.",
        "secret: ****",
        "The max_tokens: 1024 setting limits output.",
        "token: none",
        "password = changeme",
        'password = os.environ["DB_PASSWORD"]',
        "const token = process.env.GITHUB_TOKEN;",
        "password is stored hashed",
    ],
    "url_password": [
        "psql postgresql://user:password@localhost:5432/db",
        "redis://:<password>@localhost:6379/0",
        "https://github.com/org/repo and git@github.com:org/repo.git",
        "postgres://USER:PASSWORD@HOST:5432/DB",
    ],
    "cli_password": [
        "ssh -p 2222 deploy@host and docker run -p 8080:80 app",
        "mkdir -p /var/lib/app && ls -a dir",
        "git push -u origin main",
        "curl -u $USER:$TOKEN https://ci.example.com",
        'auth=(username, password) or auth=("user", "pass")',
        "mysql -u root -p",
    ],
}

CLEAN: list[str] = [
    "Sure! Here's a summary of the quarterly report: revenue grew 12% to $4.2M, driven by enterprise deals.",
    "To install the package, run `pip install requests==2.31.0` and then import it in your script.",
    "def add(a: int, b: int) -> int:\n    return a + b\n\nprint(add(2, 3))  # 5",
    "| Name | Score |\n|------|-------|\n| Ann  | 92    |\n| Bob  | 87    |",
    "The meeting moved from 10:30 to 14:00 on 2024-03-18; room B-204 on floor 2.",
    "Step 1: open Settings. Step 2: choose Privacy. Step 3: toggle 'Share analytics' off.",
    "HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Length: 1234",
    "In 1969, Apollo 11 landed; the mission lasted 8 days, 3 hours, 18 minutes and 35 seconds.",
    "Use a UUID like 123e4567-e89b-12d3-a456-426614174000 as the request id.",
    "The sha256 is 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08.",
    "git commit -m 'fix: handle empty input (#1234)' && git push origin main",
    "Temperature: 21.5°C, humidity 48%, wind 12 km/h from the north-east.",
    "The recipe needs 250 g flour, 2 eggs, 1 cup (240 ml) of milk and a pinch of salt.",
    "Kubernetes pods restart with backoff 10s, 20s, 40s, capped at 300s.",
    "Error: connection refused (errno 111) while connecting to the service on port 8443.",
    "Chapter 3.2.1 covers binary search; its complexity is O(log n).",
    "The sequence 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144 is Fibonacci.",
    "Coordinates 48.8584° N, 2.2945° E point at the Eiffel Tower.",
    "Our SLA is 99.95% uptime per calendar month, excluding maintenance windows.",
    'The model returned {"label": "positive", "confidence": 0.93} for the review.',
]
