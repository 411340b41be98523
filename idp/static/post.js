// Sends the SAML response on without a click; the button does the same without JavaScript.
document.getElementById("saml-post").submit();
