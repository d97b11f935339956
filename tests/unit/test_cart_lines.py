"""The cart keeps every add as an attribute of its own, so concurrent adds (even of one
sku, from two services) never write the same field, and reads sum the lines per sku."""

from services.cart.lines import add_line, cart_items
from services.common.models import CartLine


def test_two_adds_of_one_sku_write_two_different_attributes():
    gateway_view: dict = {}
    cart_view: dict = {}
    add_line(gateway_view, "apple", 1)
    add_line(cart_view, "apple", 2)
    assert gateway_view.keys().isdisjoint(cart_view.keys())
    assert cart_items({**gateway_view, **cart_view}) == [CartLine(sku="apple", qty=3)]


def test_the_cart_sums_lines_per_sku_sorted_and_ignores_other_attributes():
    session = {"theme": "dark", "cart:odd": "not a line", "cart:x:1": True}
    for sku, qty in [("pear", 2), ("apple", 1), ("pear", 3)]:
        add_line(session, sku, qty)
    assert cart_items(session) == [CartLine(sku="apple", qty=1), CartLine(sku="pear", qty=5)]
