"""Pacing of one channel's sends (anti-ban). Pure: `now` and the random draw are arguments.

A rule (providers/base.py: PacingRule) says how far apart sends go; a `Pacer` remembers what this
channel sent: when the next send may go, the send times of the last hour, and the last send to each
recipient when the rule has a per-recipient gap.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from services.dispatch.providers import PacingRule

HOUR = 3600.0
RECIPIENT_MEMORY = 1000  # recipients remembered before old entries are pruned


@dataclass
class Pacer:
    next_at: float = 0.0
    sent_times: deque[float] = field(default_factory=deque)
    recipients: dict[str, float] = field(default_factory=dict)

    def delay(self, rule: PacingRule, to: str, now: float) -> float:
        """Seconds until a send to `to` is allowed (0: now)."""
        while self.sent_times and self.sent_times[0] <= now - HOUR:
            self.sent_times.popleft()
        wait = self.next_at - now
        if len(self.sent_times) >= rule.hourly_cap:
            wait = max(wait, self.sent_times[0] + HOUR - now)
        if rule.recipient_gap > 0:
            last = self.recipients.get(to)
            if last is not None:
                wait = max(wait, last + rule.recipient_gap - now)
        return max(0.0, wait)

    def idle(self, now: float) -> bool:
        """Nothing left to remember: the gap passed and the last send left the hour."""
        last = self.sent_times[-1] if self.sent_times else float("-inf")
        return self.next_at <= now and last <= now - HOUR and all(t <= now - HOUR for t in self.recipients.values())

    def sent(self, rule: PacingRule, to: str, now: float, draw: float) -> None:
        """Record a send at `now`; `draw` in [0, 1) picks the jitter."""
        self.sent_times.append(now)
        self.next_at = now + rule.min_gap + draw * rule.jitter
        if rule.recipient_gap > 0:
            self.recipients[to] = now
            if len(self.recipients) > RECIPIENT_MEMORY:
                keep = max(60.0, rule.recipient_gap)
                self.recipients = {k: v for k, v in self.recipients.items() if v > now - keep}
