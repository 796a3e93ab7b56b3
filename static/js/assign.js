// "Use this loan / borrower" fills the assign form; the officer still writes the reason.
document.addEventListener("click", function (event) {
  const button = event.target.closest("[data-fill-loan], [data-fill-borrower]");
  if (!button) return;
  const form = document.getElementById("assign-form");
  if (!form) return;
  const loan = form.querySelector("[name=loan_number]");
  const borrower = form.querySelector("[name=borrower_id]");
  const shown = document.getElementById("borrower-name");
  if (button.dataset.fillLoan) {
    loan.value = button.dataset.fillLoan;
    borrower.value = "";
    shown.value = "";
  } else {
    borrower.value = button.dataset.fillBorrower;
    shown.value = button.dataset.name;
    loan.value = "";
  }
  form.querySelector("[name=reason]").focus();
});
