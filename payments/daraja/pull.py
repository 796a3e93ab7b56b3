"""Pull Transactions (REFERENCE §10.1): a shortcode's C2B payments of the last 48 hours,
to find what no callback delivered. Mixed into ``DarajaClient``, which provides ``_call``
and ``_callback_url``."""

from __future__ import annotations

from datetime import datetime

from payments.daraja.errors import DarajaError
from payments.daraja.fields import nairobi_text


class PullCalls:
    def register_pull(
        self, shortcode: str, nominated_number: str, callback_url: str, request_type: str = "Pull"
    ) -> dict:
        """Register the shortcode for Pull Transactions (once). ``ResponseStatus`` (or, in
        the older docs, ``Response Status``) is ``1000`` registered, ``1001`` already was."""
        body = {
            "ShortCode": str(shortcode),
            "RequestType": request_type,
            "NominatedNumber": nominated_number,
            "CallBackURL": self._callback_url("CallBackURL", callback_url),
        }
        return self._call("/pulltransactions/v1/register", body, what="pull register")

    def query_pull(
        self, shortcode: str, start: datetime, end: datetime, offset: int = 0
    ) -> list[dict]:
        """C2B transactions of the last 48 hours between ``start`` and ``end`` (aware
        datetimes are converted to Nairobi time, naive ones taken as Nairobi time), at most
        one page from row ``offset``. Daraja nests them as ``Response: [[...]]``; this returns
        the flat list, empty when Daraja has none (``1001``)."""
        body = {
            "ShortCode": str(shortcode),
            "StartDate": nairobi_text(start),
            "EndDate": nairobi_text(end),
            "OffSetValue": str(int(offset)),
        }
        data = self._call("/pulltransactions/v1/query", body, what="pull query")
        code = str(data.get("ResponseCode", "")).strip()
        if code == "1001":
            return []
        if code != "1000":
            raise DarajaError(
                str(data.get("ResponseMessage") or "pull query failed"),
                error_code=code or None,
                request_id=data.get("ResponseRefID"),
                http_status=200,
                operation="pull query",
            )
        rows: list[dict] = []
        for item in data.get("Response") or []:
            if isinstance(item, list):
                rows.extend(row for row in item if isinstance(row, dict))
            elif isinstance(item, dict):
                rows.append(item)
        return rows
