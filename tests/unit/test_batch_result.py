"""The batch answer written from dicts is byte for byte the answer its models would give."""

from __future__ import annotations

from service.api.routes.batch import _result, result_json
from service.api.schemas import RecipientState
from service.api.sending_schemas import BatchItem, BatchResult, FieldErrorOut
from service.domain.errors import FieldError
from service.submission import Accepted


def test_result_json_is_the_models_dump() -> None:
    ok = Accepted(
        "msg_1",
        "queued",
        1.0,
        "<m1@kirim.test>",
        [("rcp_1", "ünï@exämple.com", "queued"), ("rcp_2", "b@example.com", "suppressed")],
    )
    bad = [FieldError(("messages", 1, "to", 0), 'not an address: "x" \\ y')]
    data = [_result(0, ok, None), _result(1, None, bad), _result(2, None, [])]
    want = BatchResult(
        accepted=1,
        rejected=2,
        data=[
            BatchItem(
                index=0,
                id="msg_1",
                status="queued",
                message_id="<m1@kirim.test>",
                recipients=[
                    RecipientState(id="rcp_1", email="ünï@exämple.com", status="queued"),
                    RecipientState(id="rcp_2", email="b@example.com", status="suppressed"),
                ],
            ),
            BatchItem(
                index=1,
                errors=[
                    FieldErrorOut(
                        field="messages.1.to.0",
                        loc=["messages", 1, "to", 0],
                        message='not an address: "x" \\ y',
                    )
                ],
            ),
            BatchItem(index=2, errors=[]),
        ],
    ).model_dump_json(exclude_none=True)
    assert result_json(1, 2, data) == want
