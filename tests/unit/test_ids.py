from mailcore.domain.ids import UlidGenerator, encode_ulid, is_delivery_id


class SteppingClock:
    def __init__(self, start_ms: int) -> None:
        self.now = start_ms

    def now_ms(self) -> int:
        self.now += 1
        return self.now


def test_delivery_ids_are_prefixed_ulids() -> None:
    ids = UlidGenerator(SteppingClock(1_795_000_000_000))
    delivery_id = ids.new_delivery_id()
    assert is_delivery_id(delivery_id)
    assert delivery_id.startswith("dlv_")
    assert len(delivery_id) == 30


def test_ids_are_unique_and_sort_in_creation_order() -> None:
    ids = UlidGenerator(SteppingClock(1_795_000_000_000))
    generated = [ids.new_delivery_id() for _ in range(2000)]
    assert len(set(generated)) == len(generated)
    assert generated == sorted(generated)


def test_the_encoding_matches_the_ulid_specification() -> None:
    # The ULID spec's maximum value, and the zero value.
    assert encode_ulid((1 << 48) - 1, (1 << 80) - 1) == "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"
    assert encode_ulid(0, 0) == "0" * 26
    # 1469918176385 ms is 01ARYZ6S41 in the spec's example.
    assert encode_ulid(1469918176385, 0).startswith("01ARYZ6S41")


def test_strangers_are_not_delivery_ids() -> None:
    for text in ["", "dlv_", "dlv_01ARYZ6S41TSV4RRFFQ69G5FAVX", "DLV_01ARYZ6S41TSV4RRFFQ69G5FAV"]:
        assert not is_delivery_id(text)
    assert not is_delivery_id("dlv_01ARYZ6S41TSV4RRFFQ69G5FAU")  # U is not Crockford
