"""The secure messaging portal: mail that stays on the relay, read in a browser.

- `crypto`: AES-256-GCM per message, message keys wrapped by the portal key, the blind
  search index;
- `db`: one small SQL layer over SQLite (in `data_dir`) and PostgreSQL (shared by relays);
- `store`: the portal's data (accounts, messages, codes, sessions, rate limits, audit,
  held keys), every operation one transaction;
- `accounts`: passwords (argon2id, zxcvbn), TOTP, security phrases;
- `service`: what the relay and the web app share: storing a message for a recipient and
  queueing the notification, sending codes, submitting replies into the relay's pipeline;
- `web`: the Starlette application (server-rendered Jinja2, no JavaScript needed to read).
"""
