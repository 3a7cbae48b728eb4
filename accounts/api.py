"""The account endpoint: who does this API key belong to?"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiKey, User
from imaging.schema import COMMON_CODES, error_responses


class KeySummarySerializer(serializers.Serializer):
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="The key's first characters, e.g. `pxl_live_3kT9`.")
    last_four = serializers.CharField()


class AccountSerializer(serializers.Serializer):
    """The body of GET /v1/account. Add a field here and in ``account_body`` together."""

    id = serializers.IntegerField()
    email = serializers.EmailField()
    created_at = serializers.DateTimeField()
    key = KeySummarySerializer(help_text="The key this request was made with.")
    credits_available = serializers.IntegerField(
        help_text="Credits that can be spent now: balance minus credits held for renders in flight."
    )
    credits_held = serializers.IntegerField(
        help_text="Credits reserved by renders still running; charged only if they succeed."
    )
    credits_owed = serializers.IntegerField(
        help_text="Credits owed after a refunded or disputed payment; while above 0, renders "
                  "are refused with 402 `credits_owed` until a purchase (or support) settles them."
    )


def account_body(user: User, key: ApiKey) -> dict[str, Any]:
    """Plain data for ``AccountSerializer``; kept separate so features can add fields."""
    # Read-only use of billing: accounts never moves credits, it only reports them.
    from billing.ledger import balances

    money = balances(user)
    return {
        "id": user.pk,
        "email": user.email,
        "created_at": user.date_joined,
        "key": {"name": key.name, "prefix": key.display_prefix, "last_four": key.last_four},
        "credits_available": money.available,
        "credits_held": money.held,
        "credits_owed": money.owed,
    }


class AccountView(APIView):
    """GET /v1/account: the identity of the API key's owner."""

    @extend_schema(operation_id="retrieve_account", summary="The API key's owner and credits",
                   responses={200: AccountSerializer, **error_responses(COMMON_CODES)})
    def get(self, request: Request) -> Response:
        return Response(AccountSerializer(account_body(request.user, request.auth)).data)
