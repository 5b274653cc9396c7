"""Run by Django's test runner against a real greenjobs server (GREENJOBS_URL)."""
import uuid

from django.db import transaction
from django.test import TestCase, TransactionTestCase, override_settings

from greenjobs_client.django import get_client, submit_on_commit
from orders.models import Order


def jobs_for(ref):
    return [job for job in get_client().jobs(handler="echo", page_size=500) if job["kwargs"].get("order_ref") == ref]


class Rollback(Exception):
    pass


class SubmitOnCommitTests(TransactionTestCase):
    """Real transactions: on_commit callbacks run when the outermost atomic block commits."""

    def test_a_committed_order_makes_one_job_that_runs(self):
        order = Order.objects.create(ref=uuid.uuid4().hex, total=42)     # autocommit: committed now
        [job] = jobs_for(order.ref)
        result = get_client().job(job["id"]).result(timeout=30)
        self.assertEqual(result, {"order_ref": order.ref, "total": 42})

    def test_a_rolled_back_order_leaves_no_job(self):
        ref = uuid.uuid4().hex
        with self.assertRaises(Rollback):
            with transaction.atomic():
                Order.objects.create(ref=ref)
                raise Rollback()
        self.assertFalse(Order.objects.filter(ref=ref).exists())
        self.assertEqual(jobs_for(ref), [])

    def test_nothing_is_sent_until_the_transaction_commits(self):
        ref = uuid.uuid4().hex
        with transaction.atomic():
            Order.objects.create(ref=ref)
            self.assertEqual(jobs_for(ref), [])
        self.assertEqual(len(jobs_for(ref)), 1)

    def test_a_rolled_back_savepoint_drops_only_its_own_job(self):
        kept, dropped = uuid.uuid4().hex, uuid.uuid4().hex
        with transaction.atomic():
            Order.objects.create(ref=kept)
            try:
                with transaction.atomic():
                    Order.objects.create(ref=dropped)
                    raise Rollback()
            except Rollback:
                pass
        self.assertEqual(len(jobs_for(kept)), 1)
        self.assertEqual(jobs_for(dropped), [])

    def test_an_update_submits_nothing(self):
        order = Order.objects.create(ref=uuid.uuid4().hex)
        order.total = 7
        order.save()
        self.assertEqual(len(jobs_for(order.ref)), 1)

    def test_a_non_json_argument_fails_inside_the_transaction(self):
        ref = uuid.uuid4().hex
        with self.assertRaises(TypeError):
            with transaction.atomic():
                Order.objects.create(ref=ref)
                submit_on_commit("echo", kwargs={"order_ref": ref, "bad": object()})
        self.assertFalse(Order.objects.filter(ref=ref).exists())


class CapturedOnCommitTests(TestCase):
    """TestCase wraps each test in a transaction that never commits: captureOnCommitCallbacks runs them."""

    def test_captured_callbacks_submit_when_executed(self):
        ref = uuid.uuid4().hex
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            Order.objects.create(ref=ref)
            self.assertEqual(jobs_for(ref), [])
        self.assertEqual(len(callbacks), 1)
        self.assertEqual(len(jobs_for(ref)), 1)

    def test_callbacks_not_executed_send_nothing(self):
        ref = uuid.uuid4().hex
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            Order.objects.create(ref=ref)
        self.assertEqual(len(callbacks), 1)
        self.assertEqual(jobs_for(ref), [])

    def test_on_submitted_receives_the_job_handle(self):
        handles = []
        with self.captureOnCommitCallbacks(execute=True):
            submit_on_commit("echo", kwargs={"order_ref": "cb"}, on_submitted=handles.append)
        self.assertEqual(handles[0].result(timeout=30), {"order_ref": "cb"})

    @override_settings(GREENJOBS={})
    def test_missing_settings_are_reported(self):
        from django.core.exceptions import ImproperlyConfigured
        with self.assertRaises(ImproperlyConfigured):
            get_client()
