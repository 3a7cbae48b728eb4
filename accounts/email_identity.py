"""One mailbox, one identity: the canonical form of an e-mail address.

Used where "the same person" matters more than the exact spelling: the sign-up grant
is given once per canonical address, so ``Alice@Example.com``, ``alice@example.com`` and,
at providers where everything after ``+`` is an alias of the same mailbox,
``alice+farm1@gmail.com`` count as one.

The rules:

* the whole address is lower-cased (domains are case-insensitive, and in practice so
  are mailboxes; the accounts table already stores addresses lower-case);
* at the providers in ``PLUS_ALIAS_DOMAINS`` the ``+tag`` is dropped;
* at Gmail, dots in the mailbox are dropped too (``a.lice@gmail.com`` is
  ``alice@gmail.com``) and ``googlemail.com`` is ``gmail.com``.

Elsewhere a ``+`` is kept: on a domain we know nothing about, ``a+b@`` may be a
different person, and wrongly refusing a grant is worse than the rare farm on a
private domain (which costs the farmer a domain per grant anyway).
"""

from __future__ import annotations

# Providers documented to deliver local+anything@domain to local@domain.
PLUS_ALIAS_DOMAINS = frozenset({
    "gmail.com", "googlemail.com",
    "outlook.com", "hotmail.com", "live.com", "msn.com",
    "icloud.com", "me.com", "mac.com",
    "fastmail.com", "fastmail.fm",
    "proton.me", "protonmail.com", "protonmail.ch", "pm.me",
    "yandex.com", "yandex.ru",
    "zoho.com", "gmx.com", "gmx.de", "mail.com",
})
DOT_BLIND_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
DOMAIN_ALIASES = {"googlemail.com": "gmail.com"}


def canonical_email(address: str) -> str:
    """The canonical form of ``address`` (see the module docstring); '' stays ''."""
    address = address.strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return address
    if domain in PLUS_ALIAS_DOMAINS:
        local = local.split("+", 1)[0]
    if domain in DOT_BLIND_DOMAINS:
        local = local.replace(".", "")
    domain = DOMAIN_ALIASES.get(domain, domain)
    return f"{local}@{domain}"
